#!/usr/bin/env bash
# Real single-host Slurm test of launch/sbmt.sbatch (run by ctest as test_slurm).
#
# Starts a private Slurm (slurmctld + slurmd, auth/none, its own ports, state, spool and logs
# in a scratch directory, so it cannot meet another Slurm on this machine), then
#   a. sbatch --wait a 2-task run of a tiny model: exit 0, final.h5, metrics, two ranks;
#   b. the requeue path: a longer run gets scancel --signal=USR1 (delivered to the step's
#      tasks), sbmt checkpoints and exits 75, the script requeues the job, the second run
#      resumes from the checkpoint and completes.
# Installs Slurm (Debian slurmctld slurmd slurm-client) when missing and running as root;
# exits 77 (skipped) only when Slurm cannot be installed or run. The daemons, every process
# of their jobs and the scratch directory are removed at exit, whatever happens.
# Environment (from ctest): SBMT_BIN (build/sbmt), SBMT_SOURCE_DIR (repository root).
set -uo pipefail

SRC=${SBMT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BIN=${SBMT_BIN:-$SRC/build/sbmt}
SBATCH_SCRIPT=$SRC/launch/sbmt.sbatch
T0=$(date +%s)
# Every wait below is bounded, and all of them together by this deadline, well inside ctest's
# TIMEOUT (400 s), so a hung job fails the test (and the cleanup still runs).
DEADLINE=$((T0 + 300))
past_deadline() { [ "$(date +%s)" -ge "$DEADLINE" ]; }
bounded() {  # seconds: min(seconds, time left before the deadline), at least 1
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -ge 1 ] || left=1
  echo $(($1 < left ? $1 : left))
}

log() { echo "test_slurm [$(($(date +%s) - T0))s]: $*"; }
skip() { echo "test_slurm: SKIP: $*"; exit 77; }
SCR=""
fail() {
  echo "test_slurm: FAIL: $*"
  dump_logs
  exit 1
}
dump_logs() {
  [ -n "$SCR" ] && [ -d "$SCR" ] || return 0
  local f
  for f in "$SCR"/log/slurmctld.log "$SCR"/log/slurmd.log "$SCR"/work/*.out; do
    [ -f "$f" ] || continue
    echo "----- $f (last 60 lines) -----"
    tail -n 60 "$f"
  done
}

[ -x "$BIN" ] || fail "sbmt binary '$BIN' not found (set SBMT_BIN)"
[ -f "$SBATCH_SCRIPT" ] || fail "$SBATCH_SCRIPT not found (set SBMT_SOURCE_DIR)"

# ---- Slurm: install when missing ----
slurm_tools=(slurmctld slurmd slurmstepd sbatch srun scontrol sinfo squeue scancel)
have_slurm() {
  local t
  for t in "${slurm_tools[@]}"; do command -v "$t" >/dev/null 2>&1 || return 1; done
}
pkgs=(slurmctld slurmd slurm-client libpmix2)
if ! have_slurm || ! dpkg-query -W -f='${Status}' libpmix2 2>/dev/null | grep -q "ok installed"; then
  [ "$(id -u)" -eq 0 ] || skip "Slurm (or libpmix2) is not installed and this is not root:" \
    "apt-get install ${pkgs[*]} as root to run this test"
  command -v apt-get >/dev/null 2>&1 || skip "Slurm is not installed and there is no apt-get"
  log "installing ${pkgs[*]} (apt-get, no recommends)"
  # Do not let the packages start the system's own slurmctld/slurmd services.
  policy_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d &&
      policy_made=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/test_slurm_apt.$$ 2>&1; then
    apt-get update -qq >/dev/null 2>&1
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/test_slurm_apt.$$ 2>&1 ||
      { [ "$policy_made" = 0 ] || rm -f /usr/sbin/policy-rc.d
        tail -n 20 /tmp/test_slurm_apt.$$; rm -f /tmp/test_slurm_apt.$$
        skip "apt-get install ${pkgs[*]} failed (no package repository?)"; }
  fi
  [ "$policy_made" = 0 ] || rm -f /usr/sbin/policy-rc.d
  rm -f /tmp/test_slurm_apt.$$
  have_slurm || skip "Slurm tools still missing after installing ${pkgs[*]}"
fi
[ "$(id -u)" -eq 0 ] || skip "slurmd has to run as root to launch jobs (SlurmdUser=root); run as root"
log "$(slurmd -V 2>/dev/null) at $(command -v slurmctld)"

# ---- scratch dir, ports, slurm.conf ----
SCR=$(mktemp -d /tmp/sbmt-slurm.XXXXXX) || fail "mktemp -d failed"
mkdir -p "$SCR"/{state,spool,log,work}
chmod 755 "$SCR"
JOBS=()

port_busy() {  # port: listening on TCP (v4 or v6), from /proc/net
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$2 ~ p"$" {found = 1} END {exit !found}'
}
range_free() {  # first, count
  local p
  for ((p = $1; p < $1 + $2; p++)); do port_busy "$p" && return 1; done
  return 0
}
base=""
for _ in $(seq 50); do
  b=$((20000 + RANDOM % 9900))
  if range_free "$b" 64; then base=$b; break; fi
done
[ -n "$base" ] || fail "no free block of 64 TCP ports in 20000-30000"
CTLD_PORT=$base SLURMD_PORT=$((base + 1)) SRUN_PORTS="$((base + 2))-$((base + 63))"

HOST=$(hostname -s)
node_line=$(slurmd -C 2>/dev/null | head -n 1)
[[ "$node_line" == NodeName=* ]] || fail "slurmd -C gave no node line: '$node_line'"
# slurmd -C describes this host; name it as slurmd will see itself, address it on loopback.
node_line=$(sed -E "s/^NodeName=[^ ]+/NodeName=$HOST NodeAddr=127.0.0.1/" <<<"$node_line")

CONF=$SCR/slurm.conf
cat >"$CONF" <<EOF
# Private single-host Slurm of tests/test_slurm.sh; everything lives in $SCR.
ClusterName=sbmttest$$
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SrunPortRange=$SRUN_PORTS
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SCR/state
SlurmdSpoolDir=$SCR/spool
SlurmctldPidFile=$SCR/slurmctld.pid
SlurmdPidFile=$SCR/slurmd.pid
SlurmctldLogFile=$SCR/log/slurmctld.log
SlurmdLogFile=$SCR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node_line State=UNKNOWN
PartitionName=sbmt Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$CONF
# Only this Slurm: no inherited job or cluster settings from a caller that is itself a job.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SLURM_[A-Z_]*\)=.*/\1/p' | grep -v '^SLURM_CONF$')
unset SBATCH_PARTITION SBATCH_ACCOUNT SBATCH_QOS SRUN_CPUS_PER_TASK

# ---- daemons: start, and always stop ----
pid_of() { [ -f "$1" ] && cat "$1" 2>/dev/null; }
alive() {  # pid: running (a zombie waiting for its parent counts as gone)
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
cleanup() {
  local rc=$? j pid n p
  trap - EXIT INT TERM
  if [ -n "$SCR" ] && [ -d "$SCR" ]; then
    for j in "${JOBS[@]}"; do timeout 5 scancel --full "$j" >/dev/null 2>&1; done
    for _ in $(seq 20); do
      [ -z "$(timeout 3 squeue -h -t R,CG 2>/dev/null)" ] && break
      sleep 0.5
    done
    for pid in $(pid_of "$SCR/slurmd.pid") $(pid_of "$SCR/slurmctld.pid"); do
      kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 40); do
      n=0
      for pid in $(pid_of "$SCR/slurmd.pid") $(pid_of "$SCR/slurmctld.pid"); do
        alive "$pid" && n=$((n + 1))
      done
      [ "$n" = 0 ] && break
      sleep 0.25
    done
    for pid in $(pid_of "$SCR/slurmd.pid") $(pid_of "$SCR/slurmctld.pid"); do
      alive "$pid" && kill -KILL "$pid" 2>/dev/null && echo "test_slurm: daemon $pid did not stop; killed"
    done
    # Leftovers of this Slurm only (slurmstepd, tasks): processes whose environment names
    # this scratch directory's slurm.conf (this shell's own children no longer inherit it).
    export -n SLURM_CONF
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] || continue
      if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then
        alive "$pid" && kill -KILL "$pid" 2>/dev/null && echo "test_slurm: killed leftover process $pid"
      fi
    done
    rm -rf "$SCR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "test_slurm: interrupted"; exit 1' INT TERM

log "scratch $SCR, ports $CTLD_PORT (slurmctld), $SLURMD_PORT (slurmd), $SRUN_PORTS (srun)"
log "node: $node_line"
slurmctld -f "$CONF" || fail "slurmctld -f $CONF did not start"
slurmd -f "$CONF" || fail "slurmd -f $CONF did not start"
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node $HOST not idle after 30 s (sinfo says '$state')"
log "node $HOST idle"
srun --mpi=list 2>&1 | grep -q pmix || fail "srun --mpi=list shows no pmix: $(srun --mpi=list 2>&1)"
log "srun --mpi=list has pmix"

# A one-liner step proves the plumbing before any training: 2 tasks, ranks 0 and 1.
out=$(timeout 60 srun --mpi=pmix -n 2 --overcommit bash -c 'echo "task $SLURM_PROCID of $SLURM_NTASKS"' 2>&1) ||
  fail "srun -n 2 of a shell failed: $out"
[ "$(grep -c '^task [01] of 2$' <<<"$out")" = 2 ] || fail "srun -n 2 output: $out"
log "srun -n 2: both tasks ran"

# ---- job helpers ----
job_field() {  # job, field: value from scontrol show job
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
# Waits (at most $2 s) for a job to leave the queue's running states; prints its final state.
wait_job_end() {
  local j=$1 limit=$2 st
  for ((i = 0; i < limit * 2; i++)); do
    past_deadline && break
    st=$(job_field "$j" JobState)
    case "$st" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
        echo "$st"; return 0 ;;
    esac
    sleep 0.5
  done
  echo "${st:-gone}"
  return 1
}
last_train_step() {  # metrics.jsonl -> step of its last train line
  grep '"split":"train"' "$1" 2>/dev/null | tail -n 1 | sed -nE 's/.*"step":([0-9]+).*/\1/p'
}

cd "$SCR/work" || fail "cd $SCR/work"
"$BIN" data listops --out lo.h5 --train 400 --dev 40 --test 40 --min-len 10 --max-len 60 \
  --seq-len 64 --seed 2 --quiet || fail "sbmt data listops failed"
tiny="--data lo.h5 --set model.clusters=8 --set model.d_model=32 --set model.d_ff=48"
tiny+=" --set model.head_dim=16 --set data.seq_len=64 --set train.batch_size=8"
tiny+=" --set train.warmup=4 --set train.eval_every=0"
export SBMT_BIN=$BIN SBMT_OVERCOMMIT=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# ---- 0. srun without an MPI plugin: refused once, not two independent trainings ----
out=$(timeout 60 srun --mpi=none -n 2 --overcommit "$BIN" train $tiny --set train.steps=5 --out run0 2>&1)
rc=$?
[ "$rc" -ne 0 ] || fail "0: srun --mpi=none -n 2 sbmt train exited 0: $out"
[ "$(grep -c 'without MPI' <<<"$out")" = 1 ] || fail "0: expected the error once: $out"
[ ! -e run0 ] || fail "0: the refused run wrote run0/"
log "0: srun --mpi=none: $(grep 'without MPI' <<<"$out")"

# ---- a. sbatch --wait: 2 tasks train a tiny model ----
export SBMT_ARGS="$tiny --set train.steps=40 --set train.log_every=5 --set train.checkpoint_every=10 --out run1"
log "a. sbatch --wait --overcommit launch/sbmt.sbatch (2 tasks), SBMT_ARGS=$SBMT_ARGS"
ta=$(date +%s)
timeout "$(bounded 150)" sbatch --wait --parsable --overcommit --time=5 -o run1.out "$SBATCH_SCRIPT" >jid1 2>sbatch1.err
rc=$?
j1=$(head -n 1 jid1 | cut -d';' -f1)
[ -z "$j1" ] || JOBS+=("$j1")
[ "$rc" != 124 ] || fail "a: job $j1 did not finish within 150 s (or the test's deadline)"
echo "----- run1.out -----"; cat run1.out 2>/dev/null; echo "-----"
[ "$rc" = 0 ] || fail "a: sbatch --wait exited $rc (job $j1, $(job_field "$j1" JobState) $(job_field "$j1" ExitCode)): $(cat sbatch1.err)"
log "a: job $j1 ended with status 0 in $(($(date +%s) - ta)) s"
grep -q '(2 tasks, 1 threads each)' run1.out || fail "a: the job did not run 2 tasks"
if grep -qi '^layout:' run1.out; then
  grep -i '^layout:' run1.out | grep -qi 'world 2' || fail "a: layout is not world 2: $(grep -i '^layout:' run1.out)"
  [ "$(grep -ci '^layout:' run1.out)" = 1 ] || fail "a: the layout line is printed more than once (every rank prints?)"
  log "a: $(grep -i '^layout:' run1.out)"
else
  log "a: WARNING: sbmt printed no 'layout:' line (not distributed yet?)"
fi
[ -f run1/final.h5 ] || fail "a: run1/final.h5 missing"
n=$(grep -c '"split":"train"' run1/metrics.jsonl 2>/dev/null)
[ "${n:-0}" -ge 8 ] || fail "a: run1/metrics.jsonl has ${n:-0} train lines, expected 8 (40 steps / 5)"
[ "$(last_train_step run1/metrics.jsonl)" = 40 ] || fail "a: last train line is not step 40"
grep -q 'training finished' run1.out || fail "a: sbmt.sbatch did not report 'training finished'"
log "a: ok: final.h5, $n train lines up to step 40"

# ---- b. requeue: USR1 -> checkpoint, exit 75 -> requeue -> resume -> complete ----
steps=${SBMT_SLURM_REQUEUE_STEPS:-5000}
export SBMT_ARGS="$tiny --set train.steps=$steps --set train.log_every=100 --set train.checkpoint_every=1000 --out run2"
log "b. sbatch launch/sbmt.sbatch (2 tasks, $steps steps), SBMT_ARGS=$SBMT_ARGS"
tb=$(date +%s)
j2=$(sbatch --parsable --overcommit --time=5 -o run2.out "$SBATCH_SCRIPT" 2>sbatch2.err | cut -d';' -f1)
[ -n "$j2" ] || fail "b: sbatch failed: $(cat sbatch2.err)"
JOBS+=("$j2")
# Progress first: a train line at step >= 300 (the run is well under way).
progressed=0
for _ in $(seq 240); do
  past_deadline && break
  s=$(last_train_step run2/metrics.jsonl)
  if [ -n "$s" ] && [ "$s" -ge 300 ]; then progressed=1; break; fi
  case "$(job_field "$j2" JobState)" in RUNNING|PENDING|CONFIGURING) ;; *) break ;; esac
  sleep 0.25
done
[ "$progressed" = 1 ] || fail "b: job $j2 shows no progress to step 300 within 60 s (state $(job_field "$j2" JobState))"
[ "$s" -lt "$steps" ] || fail "b: the run finished before it could be interrupted: raise SBMT_SLURM_REQUEUE_STEPS"
log "b: job $j2 at step $s after $(($(date +%s) - tb)) s: scancel --signal=USR1 $j2 (to the step's tasks)"
scancel --signal=USR1 "$j2" || fail "b: scancel --signal=USR1 $j2 failed"
# Requeued: Slurm holds a requeued job back for a while (BeginTime, about 2 min) so that the
# old run is gone before the new one starts; once the node is idle again, release it now.
released=0
for _ in $(seq 120); do
  past_deadline && break
  st=$(job_field "$j2" JobState) reason=$(job_field "$j2" Reason)
  if [ "$st" = PENDING ] && [ "$reason" = BeginTime ]; then
    # The old run's step must be completely gone first (its slurmstepd removes its sockets,
    # e.g. stepd.slurm.pmix.J.0, last; the new run's step J.0 cannot start next to them).
    gone=0
    for _ in $(seq 120); do
      if [ -z "$(ls "$SCR/spool" | grep -E "(^|[._])$j2\.|^job0*$j2\$")" ] &&
         [ "$(sinfo -h -n "$HOST" -o %T | head -n 1)" = idle ]; then gone=1; break; fi
      sleep 0.25
    done
    [ "$gone" = 1 ] || fail "b: the first run's step is still on the node 30 s after the requeue: $(ls "$SCR/spool")"
    scontrol update JobId="$j2" StartTime=now || fail "b: scontrol update JobId=$j2 StartTime=now failed"
    log "b: job $j2 requeued (Restarts=$(job_field "$j2" Restarts)); released it from Slurm's requeue delay"
    released=1
    break
  fi
  case "$st" in RUNNING|PENDING|CONFIGURING|COMPLETING|REQUEUED) ;; *) break ;; esac
  sleep 0.5
done
[ "$released" = 1 ] || { echo "----- run2.out -----"; cat run2.out; fail "b: job $j2 was not requeued (state $st, reason $reason)"; }
final=$(wait_job_end "$j2" "$(bounded 150)") || { echo "----- run2.out -----"; cat run2.out; fail "b: job $j2 did not end within 150 s after the requeue (state $final)"; }
echo "----- run2.out -----"; cat run2.out; echo "-----"
log "b: job $j2 ended $final, ExitCode=$(job_field "$j2" ExitCode), Restarts=$(job_field "$j2" Restarts), $(($(date +%s) - tb)) s in all"
[ "$final" = COMPLETED ] || fail "b: job $j2 ended $final, not COMPLETED"
[ "$(job_field "$j2" ExitCode)" = 0:0 ] || fail "b: job exit code $(job_field "$j2" ExitCode)"
[ "$(job_field "$j2" Restarts)" = 1 ] || fail "b: Restarts=$(job_field "$j2" Restarts), expected 1"
grep -q 'srun exited with status 75' run2.out || fail "b: the interrupted run did not exit 75"
grep -q "requeued job $j2" run2.out || fail "b: sbmt.sbatch did not requeue the job"
grep -q 'resumed from' run2.out || fail "b: the second run did not resume from a checkpoint"
[ "$(grep -c 'job .* run [12] on' run2.out)" = 2 ] || fail "b: expected exactly two runs of the job"
[ -f run2/final.h5 ] || fail "b: run2/final.h5 missing"
[ "$(last_train_step run2/metrics.jsonl)" = "$steps" ] || fail "b: last train line is not step $steps"
log "b: ok: $(grep -m1 'resumed from' run2.out); final.h5 written"
# ---- c. a rank that dies (SIGKILL) ends the job in bounded time; a new job resumes ----
steps=${SBMT_SLURM_KILL_STEPS:-5000}
export SBMT_ARGS="$tiny --set train.steps=$steps --set train.log_every=100 --set train.checkpoint_every=200 --out run3"
log "c. sbatch launch/sbmt.sbatch (2 tasks), SIGKILL of one rank after the first checkpoint"
j3=$(sbatch --parsable --overcommit --time=5 -o run3.out "$SBATCH_SCRIPT" 2>sbatch3.err | cut -d';' -f1)
[ -n "$j3" ] || fail "c: sbatch failed: $(cat sbatch3.err)"
JOBS+=("$j3")
for _ in $(seq 240); do
  past_deadline && break
  [ -f run3/ckpt_00000200.h5 ] && break
  case "$(job_field "$j3" JobState)" in RUNNING|PENDING|CONFIGURING) ;; *) break ;; esac
  sleep 0.25
done
[ -f run3/ckpt_00000200.h5 ] || fail "c: no checkpoint at step 200 within 60 s (state $(job_field "$j3" JobState))"
# The ranks are the processes named sbmt whose arguments name run3 (srun's own do too).
ranks=()
for p in $(pgrep -x sbmt); do tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- '--out run3 ' && ranks+=("$p"); done
[ "${#ranks[@]}" = 2 ] || fail "c: expected 2 sbmt ranks of job $j3, found ${#ranks[@]}"
tc=$(date +%s)
kill -KILL "${ranks[1]}"
final=$(wait_job_end "$j3" "$(bounded 60)") || fail "c: job $j3 still $final 60 s after SIGKILL of one rank"
tk=$(($(date +%s) - tc))
log "c: SIGKILL of rank pid ${ranks[1]}: job $j3 ended $final in $tk s (ExitCode=$(job_field "$j3" ExitCode))"
[ "$final" != COMPLETED ] || fail "c: job $j3 COMPLETED after one rank was killed"
[ "$tk" -lt 60 ] || fail "c: the job took $tk s to end"
for p in "${ranks[@]}"; do kill -0 "$p" 2>/dev/null && fail "c: rank pid $p still alive after the job ended"; done
timeout "$(bounded 150)" sbatch --wait --parsable --overcommit --time=5 -o run3b.out "$SBATCH_SCRIPT" >jid3b 2>sbatch3b.err
rc=$?
j3b=$(head -n 1 jid3b | cut -d';' -f1)
[ -z "$j3b" ] || JOBS+=("$j3b")
[ "$rc" = 0 ] || { cat run3b.out; fail "c: the resubmitted job exited $rc"; }
grep -q 'resumed from run3/ckpt_' run3b.out || fail "c: the resubmitted job did not resume from a checkpoint"
[ -f run3/final.h5 ] || fail "c: run3/final.h5 missing"
log "c: ok: $(grep -m1 'resumed from' run3b.out); final.h5 written"
log "PASS in $(($(date +%s) - T0)) s"
