"""Checks a run's TensorBoard event files against its metrics.jsonl (tests/test_tensorboard.sh).

usage: tb_check.py RUN_DIR [--same-as OTHER_RUN_DIR] [--no-density]

1. Every file under RUN_DIR/tb is walked record by record by an independent TFRecord reader:
   both masked CRC-32C values of every record must be right, the first Event must carry
   file_version "brain.Event:2", and no (tag, step) may appear twice in the raw records
   (TensorBoard's purge logic would hide duplicates, so they are counted before it).
2. TensorBoard's own EventAccumulator (orphan purging off) must find exactly the tags that
   metrics.jsonl implies, each with the steps of metrics.jsonl in order and the same values
   (float32 of the printed numbers).
3. --same-as: every tag except throughput must equal the other run's values (a resumed run
   against an uninterrupted one).
Prints one line per check; exits 1 at the first failure.
"""
import glob
import json
import math
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator


def fail(msg):
    print("tb_check: FAIL: " + msg)
    sys.exit(1)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def varint(b, i):
    v, s = 0, 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << s
        s += 7
        if not x & 0x80:
            return v, i


def fields(b):
    """(field, wire, value) of a protobuf message; value is int, bytes or raw fixed bytes."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            fail("wire type %d in an Event" % w)
        yield f, w, v


def raw_events(path):
    """[(step, file_version or None, [(tag, value)])] of one file, CRCs checked."""
    out = []
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        if len(data) - i < 12:
            fail("%s: %d stray bytes at the end" % (path, len(data) - i))
        head = data[i:i + 8]
        (n,) = struct.unpack("<Q", head)
        (hc,) = struct.unpack("<I", data[i + 8:i + 12])
        if hc != masked(head):
            fail("%s: bad length CRC at byte %d" % (path, i))
        body = data[i + 12:i + 12 + n]
        (dc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if len(body) != n or dc != masked(body):
            fail("%s: bad data CRC at byte %d" % (path, i))
        i += 16 + n
        step, fv, vals = 0, None, []
        for f, w, v in fields(body):
            if f == 2 and w == 0:
                step = v
            elif f == 3 and w == 2:
                fv = v.decode()
            elif f == 5 and w == 2:
                for sf, sw, sv in fields(v):
                    if sf != 1:
                        continue
                    tag, val = None, None
                    for vf, vw, vv in fields(sv):
                        if vf == 1:
                            tag = vv.decode()
                        elif vf == 2 and vw == 5:
                            (val,) = struct.unpack("<f", vv)
                    vals.append((tag, val))
        out.append((step, fv, vals))
    return out


def expected(run):
    """tag -> [(step, value)] implied by metrics.jsonl."""
    exp = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        m = json.loads(line)
        split, step = m["split"], m["step"]
        if split == "train":
            vals = {"train/loss": m["loss"], "train/accuracy": m["accuracy"],
                    "train/lr": m["lr"], "train/tokens_per_s": m["tokens_per_s"]}
            if "comm_fraction" in m:
                vals["train/comm_fraction"] = m["comm_fraction"]
            if "density" in m:
                vals["density/mean"] = m["density_mean"]
                for l, row in enumerate(m["density"]):
                    for h, d in enumerate(row):
                        vals["density/layer%d/head%d" % (l, h)] = d
        else:
            vals = {split + "/loss": m["loss"], split + "/accuracy": m["accuracy"]}
            if "density_mean" in m:
                vals[split + "/density_mean"] = m["density_mean"]
        for t, v in vals.items():
            exp.setdefault(t, []).append((step, v))
    return exp


def close(a, b, rel=2e-5, abs_=2e-6):
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def accumulate(run):
    ea = event_accumulator.EventAccumulator(
        os.path.join(run, "tb"), size_guidance={event_accumulator.SCALARS: 0},
        purge_orphaned_data=False)
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def main():
    args = sys.argv[1:]
    run = args.pop(0)
    other = args[args.index("--same-as") + 1] if "--same-as" in args else None
    files = sorted(glob.glob(os.path.join(run, "tb", "events.out.tfevents.*")))
    if not files:
        fail("no event files in %s/tb" % run)
    seen, nrec = set(), 0
    for k, path in enumerate(files):
        evs = raw_events(path)
        nrec += len(evs)
        if k == 0 and (not evs or evs[0][1] != "brain.Event:2"):
            fail("%s: first record is not file_version brain.Event:2" % path)
        for step, _, vals in evs:
            for tag, _ in vals:
                if (tag, step) in seen:
                    fail("%s: tag %s at step %d written twice" % (path, tag, step))
                seen.add((tag, step))
    print("tb_check: %d file(s), %d records, every CRC valid, no (tag, step) twice"
          % (len(files), nrec))
    exp, got = expected(run), accumulate(run)
    if sorted(exp) != sorted(got):
        fail("tags differ: metrics imply %s, TensorBoard reads %s" % (sorted(exp), sorted(got)))
    if "--no-density" in args and any(t.startswith("density") for t in got):
        fail("density tags in a run without SBM attention")
    npts = 0
    for t in exp:
        es, gs = [s for s, _ in exp[t]], [s for s, _ in got[t]]
        if es != gs:
            fail("%s: steps %s in metrics.jsonl, %s in TensorBoard" % (t, es, gs))
        # metrics.jsonl prints comm_fraction with 4 decimals, the rest to float32 precision.
        abs_ = 5.1e-5 if t.endswith("comm_fraction") else 2e-6
        for (s, e), (_, g) in zip(exp[t], got[t]):
            if not close(e, g, abs_=abs_):
                fail("%s step %d: metrics.jsonl %r, TensorBoard %r" % (t, s, e, g))
        npts += len(es)
    print("tb_check: EventAccumulator reads %d tags, %d points, steps and values equal to "
          "metrics.jsonl" % (len(got), npts))
    if other:
        ref = accumulate(other)
        for t in got:
            if t.endswith("tokens_per_s") or t.endswith("comm_fraction"):
                continue
            if t not in ref or [s for s, _ in ref[t]] != [s for s, _ in got[t]]:
                fail("%s: steps differ from %s" % (t, other))
            for (s, a), (_, b) in zip(got[t], ref[t]):
                if not (a == b or (math.isnan(a) and math.isnan(b))):
                    fail("%s step %d: %r here, %r in %s" % (t, s, a, b, other))
        print("tb_check: every curve equals %s's" % other)


main()
