#!/usr/bin/env bash
# sbmt-mpirun.sh: runs `sbmt train ...` (or any sbmt command) under Open MPI's mpirun, on this
# host or on the hosts of a hostfile, with thread counts, binding, oversubscription and the
# environment chosen for it. `sbmt-mpirun.sh --help` documents it.
set -euo pipefail

prog=sbmt-mpirun.sh
usage() {
  cat <<'EOF'
Usage: launch/sbmt-mpirun.sh -n N [--hostfile F] [--ranks-per-node R] [--threads T]
                             [--dry-run] -- SBMT_ARGS...

Runs `mpirun ... sbmt SBMT_ARGS --threads T` with N ranks (MPI processes), e.g.
  launch/sbmt-mpirun.sh -n 4 -- train --config configs/listops-small.ini --set dist.tp=2
  launch/sbmt-mpirun.sh -n 16 --hostfile hosts --ranks-per-node 8 -- train --config C.ini --out runs/x

Options:
  -n N                 total number of ranks (required). World = dp x tp: set dist.tp with
                       --set dist.tp=T after --; dp = N / tp.
  --hostfile F         Open MPI hostfile ("host slots=S" per line). Without it every rank runs
                       on this host.
  --ranks-per-node R   place R ranks on each node (mpirun --map-by ppr:R:node).
  --threads T          CPU threads per rank: sbmt --threads T and OMP_NUM_THREADS=T. Default:
                       the cores of a node / the ranks on that node, at least 1 (nodes are
                       assumed to have as many cores as this one). OPENBLAS_NUM_THREADS is
                       always 1 (sbmt runs BLAS single-threaded inside its own threads).
  --dry-run            print the mpirun command line and exit 0 without running it.
  -h, --help           this text.

What it adds to mpirun:
  - as root (uid 0) only: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;
  - --oversubscribe when N exceeds this host's cores and there is no hostfile;
  - --bind-to none when T > 1 or oversubscribed (otherwise Open MPI's default binding);
  - -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS (and -x LD_LIBRARY_PATH when set), so remote
    ranks get them too.
The exact command is printed to stderr before it runs; the script exits with mpirun's status.
SIGTERM, SIGINT or SIGUSR1 to this script are passed to mpirun as SIGUSR1, which mpirun
forwards to every rank: sbmt train writes a checkpoint at the next step and exits 75
(EX_TEMPFAIL), and so does this script; `--resume auto` continues from it.

Environment:
  SBMT_BIN          the sbmt binary (default: build/sbmt next to this script's launch/ dir);
                    it must exist at the same path on every host.
  MPIRUN            the mpirun to use (default: mpirun on PATH).
  SBMT_MPIRUN_ARGS  extra mpirun arguments, split on spaces (e.g. "--mca btl_tcp_if_include eth0").
Exit status: mpirun's; 2 for a usage error.
EOF
}

die_usage() {
  echo "$prog: $*" >&2
  echo "$prog: see $prog --help" >&2
  exit 2
}

need_value() {  # flag, number of remaining args
  [ "$2" -ge 2 ] || die_usage "option $1 needs a value"
}

positive_int() {  # flag, value
  [[ "$2" =~ ^[0-9]+$ ]] && [ "$((10#$2))" -ge 1 ] ||
    die_usage "option $1 needs a positive integer, got '$2'"
}

# Physical cores this process may run on (what Open MPI counts as slots): the distinct
# (socket, core) pairs of the CPUs in our affinity mask; nproc when lscpu is unavailable.
local_cores() {
  local allowed n
  allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status 2>/dev/null || true)
  if [ -n "$allowed" ] && command -v lscpu >/dev/null 2>&1; then
    n=$(lscpu -p=cpu,core,socket 2>/dev/null | awk -F, -v allowed="$allowed" '
      BEGIN {
        m = split(allowed, parts, ",")
        for (i = 1; i <= m; i++) {
          if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) ok[c] = 1 }
          else ok[parts[i]] = 1
        }
      }
      /^#/ { next }
      ($1 in ok) && !seen[$3 "," $2]++ { count++ }
      END { print count + 0 }')
    if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ]; then echo "$n"; return; fi
  fi
  nproc
}

# The most ranks mpirun puts on one host of the hostfile with its default by-slot mapping
# (fill each host's slots in order; a host without slots= gets `cores`); when N exceeds the
# slots, spread round-robin as mpirun --oversubscribe would.
max_ranks_per_host() {  # hostfile, N, cores
  awk -v n="$2" -v cores="$3" '
    { sub(/#.*/, "") }
    NF == 0 { next }
    {
      s = cores
      for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, kv, "="); s = kv[2] + 0 }
      hosts++; slots[hosts] = s; total += s
    }
    END {
      if (hosts == 0) { print 0; exit }
      if (n <= total) {
        left = n; best = 0
        for (h = 1; h <= hosts && left > 0; h++) {
          take = left < slots[h] ? left : slots[h]; if (take > best) best = take; left -= take
        }
        print best
      } else print int((n + hosts - 1) / hosts)
    }' "$1"
}

nranks="" hostfile="" ppr="" threads="" dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -n|--np|-np) need_value "$1" $#; positive_int "$1" "$2"; nranks=$((10#$2)); shift 2 ;;
    --hostfile) need_value "$1" $#; hostfile=$2; shift 2 ;;
    --ranks-per-node) need_value "$1" $#; positive_int "$1" "$2"; ppr=$((10#$2)); shift 2 ;;
    --threads) need_value "$1" $#; positive_int "$1" "$2"; threads=$((10#$2)); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) die_usage "unexpected argument '$1' (the sbmt arguments go after --)" ;;
  esac
done
[ -n "$nranks" ] || die_usage "missing -n N (the number of ranks)"
[ $# -gt 0 ] || die_usage "missing the sbmt arguments after -- (e.g. -- train --config C.ini)"
if [ -n "$hostfile" ]; then
  [ -f "$hostfile" ] && [ -r "$hostfile" ] || die_usage "option --hostfile: cannot read '$hostfile'"
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SBMT_BIN:-$here/../build/sbmt}
[ -x "$bin" ] || { echo "$prog: sbmt binary '$bin' not found or not executable (build it with" \
  "launch/build.sh, or set SBMT_BIN)" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
mpirun=${MPIRUN:-mpirun}
command -v "$mpirun" >/dev/null 2>&1 || { echo "$prog: '$mpirun' not found (install" \
  "openmpi-bin, or set MPIRUN)" >&2; exit 2; }

# sbmt --threads given after -- wins over the wrapper's own computation.
user_threads=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[i]}" = "--threads" ] && [ $((i + 1)) -lt ${#args[@]} ]; then
    user_threads=${args[i + 1]}
  fi
done
if [ -n "$user_threads" ]; then
  [ -z "$threads" ] || [ "$threads" = "$user_threads" ] ||
    die_usage "--threads $threads and, after --, --threads $user_threads disagree"
  positive_int "--threads (after --)" "$user_threads"
  threads=$((10#$user_threads))
fi

cores=$(local_cores)
if [ -n "$ppr" ]; then per_node=$ppr
elif [ -n "$hostfile" ]; then per_node=$(max_ranks_per_host "$hostfile" "$nranks" "$cores")
  [ "$per_node" -ge 1 ] || die_usage "option --hostfile: no hosts in '$hostfile'"
else per_node=$nranks
fi
[ "$per_node" -le "$nranks" ] || per_node=$nranks
if [ -z "$threads" ]; then
  threads=$((cores / per_node))
  [ "$threads" -ge 1 ] || threads=1
fi

oversubscribe=0
if [ -z "$hostfile" ] && [ "$nranks" -gt "$cores" ]; then oversubscribe=1; fi

envs=()
if [ "$(id -u)" -eq 0 ]; then envs+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1); fi
envs+=(OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS=1)

cmd=("$mpirun" -n "$nranks")
[ -z "$hostfile" ] || cmd+=(--hostfile "$hostfile")
[ -z "$ppr" ] || cmd+=(--map-by "ppr:$ppr:node")
[ "$oversubscribe" = 0 ] || cmd+=(--oversubscribe)
if [ "$threads" -gt 1 ] || [ "$oversubscribe" = 1 ]; then cmd+=(--bind-to none); fi
cmd+=(-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
[ -z "${LD_LIBRARY_PATH:-}" ] || cmd+=(-x LD_LIBRARY_PATH)
if [ -n "${SBMT_MPIRUN_ARGS:-}" ]; then
  read -r -a extra <<<"$SBMT_MPIRUN_ARGS"
  cmd+=("${extra[@]}")
fi
cmd+=("$bin" "$@")
[ -n "$user_threads" ] || cmd+=(--threads "$threads")

{
  printf '%s: %d ranks, %d per node, %d threads each (%d cores here)\n' "$prog" "$nranks" \
    "$per_node" "$threads" "$cores"
  printf '+ env'
  printf ' %q' "${envs[@]}" "${cmd[@]}"
  printf '\n'
} >&2
[ "$dry_run" = 0 ] || exit 0

export "${envs[@]}"
# SIGTERM/SIGINT/SIGUSR1 to this script reach the ranks as SIGUSR1 (mpirun passes SIGUSR1 on):
# sbmt train checkpoints at the next step and every rank exits 75, which mpirun returns. (A
# SIGTERM sent to mpirun itself aborts the job: sbmt still checkpoints, but mpirun exits 1.)
set +e
"${cmd[@]}" &
mpirun_pid=$!
forward() {
  echo "$prog: got SIG$1: sending SIGUSR1 to mpirun (sbmt checkpoints and exits 75)" >&2
  kill -USR1 "$mpirun_pid" 2>/dev/null || true
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward USR1' USR1
while :; do  # wait returns early (> 128) on a trapped signal: wait again while mpirun runs
  wait "$mpirun_pid"
  rc=$?
  [ "$rc" -gt 128 ] || break
  if ! kill -0 "$mpirun_pid" 2>/dev/null; then
    wait "$mpirun_pid"
    r2=$?
    [ "$r2" -eq 127 ] || rc=$r2
    break
  fi
done
exit "$rc"
