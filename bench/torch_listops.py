#!/usr/bin/python3
"""PyTorch-on-CPU reference of the sbmt encoder (SPEC.md section 1), for throughput comparison.

Times full training steps (forward + backward + AdamW step) of the LRA ListOps classifier:
token + learned positional embedding, L pre-LayerNorm blocks, final LayerNorm, padding mask,
MEAN (or CLS) pooling, Linear -> ReLU -> Linear head, cross-entropy.

Attention is computed explicitly (matmul, masked softmax, dropout, matmul) as the
SBM-Transformer / Nystromformer LRA reference code does; `--sdpa` switches to
torch.nn.functional.scaled_dot_product_attention where the installed torch has it (>= 2.0).
Attention kinds are looked up in ATTENTION_CORES: "softmax" (full attention) and "sbm"
(SPEC.md section 2, computed densely as the authors' PyTorch reference does: the n x n edge
probabilities are materialised, the graph is sampled as a dense Bernoulli matrix with a
straight-through estimator, and the softmax is masked by it and L1-renormalised).

Prints one human-readable line and, last, one JSON line:
  {"impl":"pytorch","threads":..,"batch":..,"seq_len":..,"step_s":..,"tokens_per_s":..,
   "torch":..,"blas":..,"attention":..,"attn_impl":..,"density":..,"peak_rss_mb":..}
("density": mean sampled-graph density over layers, heads and timed steps for sbm, else null).
tokens_per_s = batch * seq_len / step_s (padding included, as sbmt counts them).

Run with Debian's interpreter: /usr/bin/python3 bench/torch_listops.py --help
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence length (default 2048, or the dataset's seq_len with --data)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads; OMP/OpenBLAS threads are set to the same")
    p.add_argument("--data", default=None,
                   help="sbmt HDF5 dataset; rows of /train/input_ids and /train/labels are used "
                        "(default: synthetic ListOps-like ids, lengths 500..2000, then padding)")
    p.add_argument("--seed", type=int, default=0)
    # model (SPEC section 4 reference hyperparameters)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-ff", type=int, default=128, help="FFN and head hidden size Dh")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=None,
                   help="vocabulary size (default 32 as in SPEC's listops row, or the dataset's "
                        "vocab_size attribute with --data)")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (default 10, or the dataset's num_classes)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--attn-dropout", type=float, default=0.1)
    p.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    p.add_argument("--attention", default="softmax", help="attention kind (registered: softmax, sbm)")
    p.add_argument("--clusters", type=int, default=128, help="sbm: clusters k per head")
    p.add_argument("--edge-floor", type=float, default=0.01,
                   help="sbm: eps added to the edge probabilities before sampling")
    p.add_argument("--sparsity-weight", type=float, default=1e-4,
                   help="sbm: weight of the mean graph density added to the loss")
    p.add_argument("--sdpa", action="store_true",
                   help="use F.scaled_dot_product_attention (torch >= 2.0) instead of explicit "
                        "matmul/softmax")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--device", default="cpu", help="cpu or cuda (bench/gpu_check.sh)")
    p.add_argument("--bf16", action="store_true",
                   help="cuda: autocast matmuls to bfloat16 (fp32 master weights), as sbmt's "
                        "train.precision = bf16")
    return p.parse_args(argv)


# Thread counts must be fixed before torch (and its OpenMP / OpenBLAS) is loaded. Imported as a
# module (tests/torch_crosscheck.py uses the model classes), the defaults apply.
ARGS = parse_args() if __name__ == "__main__" else parse_args([])
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


# ---------------------------------------------------------------------------------------------
# BLAS detection
# ---------------------------------------------------------------------------------------------

def _libtorch_cpu():
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    return lib if os.path.exists(lib) else None


def _loaded_blas_libs():
    """Real paths of BLAS-like shared objects mapped into this process (after a matmul)."""
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # make sure lazily loaded libs are in
    libs = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6:
                    path = parts[5]
                    base = os.path.basename(path).lower()
                    if any(t in base for t in ("blas", "mkl_", "libmkl", "blis", "lapack")) \
                            and path not in libs:
                        libs.append(path)
    except OSError:
        pass
    return libs


def _openblas_info(libs):
    """(config string, core name) from the first loaded lib exporting openblas_get_config."""
    import ctypes
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            fn = lib.openblas_get_config
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        conf = fn().decode(errors="replace").strip()
        core = ""
        try:
            cn = lib.openblas_get_corename
            cn.restype = ctypes.c_char_p
            core = cn().decode(errors="replace").strip()
        except AttributeError:
            pass
        try:  # pthread OpenBLAS keeps its own pool; pin it to --threads as well
            lib.openblas_set_num_threads(ctypes.c_int(ARGS.threads))
        except AttributeError:
            pass
        return conf, core, path
    return None, None, None


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_blas():
    """Return (short summary, is_openblas, detail lines)."""
    cfg = torch.__config__.show()
    blas_info = "?"
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        for tok in cfg.replace(",", " ").split():
            if tok.startswith(key + "="):
                if key == "BLAS_INFO":
                    blas_info = tok.split("=", 1)[1]
    mkl = "Intel(R) Math Kernel Library" in cfg or "MKL" in blas_info.upper()
    details = [f"torch BLAS_INFO={blas_info}"]

    lt = _libtorch_cpu()
    if lt:
        for line in _run(["ldd", lt]).splitlines():
            if any(t in line for t in ("blas", "lapack", "mkl")):
                details.append("ldd libtorch_cpu.so: " + line.strip())
    ua = _run(["update-alternatives", "--display", "libblas.so.3-x86_64-linux-gnu"])
    for line in ua.splitlines():
        if "link currently points to" in line:
            details.append("update-alternatives libblas.so.3: " + line.strip())

    libs = _loaded_blas_libs()
    for path in libs:
        details.append("mapped: " + path + (" -> " + os.path.realpath(path)
                                            if os.path.realpath(path) != path else ""))
    conf, core, ob_path = _openblas_info(libs)
    if conf:
        details.append(f"openblas_get_config: {conf} (core {core or '?'})")
    # libblas.so.3 resolved to the reference implementation (.../blas/libblas.so.3*)?
    reference = any("/blas/libblas.so" in os.path.realpath(p) for p in libs)
    # torch calls sgemm_ through libblas.so.3; openblas counts only if that is what it resolved to
    blas3 = [os.path.realpath(p) for p in libs if os.path.basename(p).startswith("libblas.so")]
    is_openblas = bool(conf) and not reference and (
        not blas3 or any("openblas" in p for p in blas3))
    if mkl:
        summary = f"MKL (BLAS_INFO={blas_info})"
        is_fast = True
    elif is_openblas:
        ver = conf.split()[1] if conf and len(conf.split()) > 1 else "?"
        summary = f"OpenBLAS {ver} {core or ''}".strip() + f" via {blas3[0] if blas3 else ob_path}"
        is_fast = True
    elif reference:
        summary = "reference BLAS (netlib) via " + (blas3[0] if blas3 else "libblas.so.3")
        is_fast = False
    else:
        summary = f"unknown (BLAS_INFO={blas_info}; mapped: {', '.join(libs) or 'none'})"
        is_fast = False
    return summary, is_fast, details


# ---------------------------------------------------------------------------------------------
# Model (SPEC section 1)
# ---------------------------------------------------------------------------------------------

class SoftmaxCore(nn.Module):
    """Full softmax attention with key padding mask; q, k, v [b, H, n, d], mask [b, n] float."""

    def __init__(self, head_dim, attn_dropout, use_sdpa=False):
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)
        self.p = attn_dropout
        self.drop = nn.Dropout(attn_dropout)
        self.use_sdpa = use_sdpa

    def forward(self, q, k, v, mask):
        if self.use_sdpa:
            keep = mask[:, None, None, :] > 0  # True = attend
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, dropout_p=self.p if self.training else 0.0)
        # as the reference: dot - 1e6 * (1 - mask), softmax, dropout, matmul
        dot = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        dot = dot - 1e6 * (1.0 - mask[:, None, None, :])
        attn = self.drop(F.softmax(dot, dim=-1))
        return torch.matmul(attn, v)


class SampleGraphSTE(torch.autograd.Function):
    """Dense Bernoulli graph with the reference's straight-through estimator (its STE.py).

    forward(P, eps, mask): A ~ Bernoulli(clamp(P + eps, 0, 1)), then the rows and columns of
    padded positions (mask [b, n] == 0) are zeroed, so no edge touches them (SPEC section 2.4;
    sbmt's samplers do the same, which keeps the density figures comparable). The mask is
    applied in place on the sample, so no second n x n tensor is kept for it.
    backward: hardtanh(A * grad) to P (clipped to [-1, 1] on sampled edges, 0 elsewhere).
    """

    @staticmethod
    def forward(ctx, p, eps, mask):
        a = torch.bernoulli(torch.clamp(p + eps, min=0.0, max=1.0))
        a.mul_(mask[:, None, :, None]).mul_(mask[:, None, None, :])
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved_tensors
        return F.hardtanh(a * grad), None, None


class SBMCore(nn.Module):
    """SBM attention (SPEC section 2) computed densely, as the authors' PyTorch code does.

    Cluster embeddings C [H, k, d] (kaiming normal, std sqrt(2/(k d))) and one MLP phi shared by
    the heads of the layer. S_h = softmax over all k*k entries of C_h C_h^T;
    Yq = sigmoid(phi(Q) C_h^T), Yk = sigmoid(phi(K) C_h^T) with padded rows zeroed;
    P = Yq S_h Yk^T materialised [b, H, n, n]; A sampled by SampleGraphSTE; attention
    = L1-normalise(softmax(QK^T/sqrt(d), key padding mask) * A), dropout, @ V.
    Each forward leaves the per-head density A.sum / (b n n) [H] (with gradient, through the
    STE) in self.density for the sparsity regulariser.
    """

    def __init__(self, head_dim, attn_dropout, heads, clusters, edge_floor):
        super().__init__()
        self.scale = 1.0 / math.sqrt(head_dim)
        self.eps = edge_floor
        self.drop = nn.Dropout(attn_dropout)
        self.clusters = nn.Parameter(torch.empty(heads, clusters, head_dim))
        nn.init.kaiming_normal_(self.clusters)
        self.proj = nn.Sequential(nn.Linear(head_dim, head_dim), nn.ReLU(),
                                  nn.Linear(head_dim, head_dim))
        self.density = None

    def forward(self, q, k, v, mask):
        b, H, n, _ = q.shape
        C = self.clusters                                       # [H, k, d]
        kc = C.shape[1]
        S = F.softmax(torch.matmul(C, C.transpose(-1, -2)).reshape(H, kc * kc), dim=-1)
        S = S.reshape(H, kc, kc)
        keep = mask[:, None, :, None]                           # [b, 1, n, 1]
        Ct = C.transpose(-1, -2)                                # [H, d, k]
        yq = torch.sigmoid(torch.matmul(self.proj(q), Ct)) * keep  # [b, H, n, k]
        yk = torch.sigmoid(torch.matmul(self.proj(k), Ct)) * keep
        p = torch.matmul(yq, torch.matmul(S, yk.transpose(-1, -2)))  # [b, H, n, n]
        a = SampleGraphSTE.apply(p, self.eps, mask)
        del p
        self.density = a.sum(dim=(0, 2, 3)) / (b * n * n)      # [H]
        dot = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        dot = dot.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        attn = F.normalize(F.softmax(dot, dim=-1) * a, p=1, dim=-1)  # x / max(|x|_1, 1e-12)
        return torch.matmul(self.drop(attn), v)


# Factories: args -> module(q, k, v, mask) -> [b, H, n, d]; q, k, v [b, H, n, d], mask [b, n].
ATTENTION_CORES = {
    "softmax": lambda a: SoftmaxCore(a.head_dim, a.attn_dropout, a.sdpa),
    "sbm": lambda a: SBMCore(a.head_dim, a.attn_dropout, a.heads, a.clusters, a.edge_floor),
}


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        hd = a.heads * a.head_dim
        self.H, self.d = a.heads, a.head_dim
        self.wq = nn.Linear(a.d_model, hd)
        self.wk = nn.Linear(a.d_model, hd)
        self.wv = nn.Linear(a.d_model, hd)
        self.core = ATTENTION_CORES[a.attention](a)
        self.wo = nn.Linear(hd, a.d_model)

    def split(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.H, self.d).transpose(1, 2)

    def forward(self, x, mask):
        b, n, _ = x.shape
        y = self.core(self.split(self.wq(x)), self.split(self.wk(x)), self.split(self.wv(x)),
                      mask)
        return self.wo(y.transpose(1, 2).reshape(b, n, self.H * self.d))


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.ln1 = nn.LayerNorm(a.d_model, eps=1e-5)
        self.attn = Attention(a)
        self.drop1 = nn.Dropout(a.dropout)
        self.ln2 = nn.LayerNorm(a.d_model, eps=1e-5)
        self.ffn = nn.Sequential(
            nn.Linear(a.d_model, a.d_ff), nn.GELU(), nn.Dropout(a.dropout),
            nn.Linear(a.d_ff, a.d_model), nn.Dropout(a.dropout))

    def forward(self, x, mask):
        x = x + self.drop1(self.attn(self.ln1(x), mask))
        return x + self.ffn(self.ln2(x))


class Classifier(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.pooling = a.pooling
        self.cls_id = a.vocab - 1
        self.tokens = nn.Embedding(a.vocab, a.d_model)
        self.positions = nn.Embedding(a.seq_len, a.d_model)
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.drop = nn.Dropout(a.dropout)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.final_ln = nn.LayerNorm(a.d_model, eps=1e-5)
        self.head = nn.Sequential(nn.Linear(a.d_model, a.d_ff), nn.ReLU(),
                                  nn.Linear(a.d_ff, a.classes))

    def forward(self, ids):
        if self.pooling == "cls":  # prepend CLS (id vocab-1), drop the last token
            cls = torch.full_like(ids[:, :1], self.cls_id)
            ids = torch.cat([cls, ids[:, :-1]], dim=1)
        mask = (ids != 0).float()
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.tokens(ids) + self.positions(pos)[None])
        for layer in self.layers:
            x = layer(x, mask)
        x = self.final_ln(x) * mask[:, :, None]
        pooled = x[:, 0] if self.pooling == "cls" else x.sum(dim=1) / x.shape[1]
        return self.head(pooled)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def synthetic_batches(a, count, rng):
    out = []
    for _ in range(count):
        ids = np.zeros((a.batch, a.seq_len), dtype=np.int64)
        hi = min(2000, a.seq_len)
        lo = min(500, hi)
        for r in range(a.batch):
            n = int(rng.integers(lo, hi + 1))
            ids[r, :n] = rng.integers(1, 16, size=n)  # 15 ListOps symbols, 0 = padding
        labels = rng.integers(0, a.classes, size=a.batch)
        out.append((torch.from_numpy(ids), torch.from_numpy(labels.astype(np.int64))))
    return out


def file_batches(a, count, f):
    ids_ds, lab_ds = f["/train/input_ids"], f["/train/labels"]
    rows = ids_ds.shape[0]
    if ids_ds.shape[1] != a.seq_len:
        sys.exit(f"{a.data}: /train/input_ids has seq_len {ids_ds.shape[1]}, "
                 f"requested --seq-len {a.seq_len}")
    out = []
    for i in range(count):
        start = (i * a.batch) % rows
        idx = [(start + j) % rows for j in range(a.batch)]
        if idx == list(range(idx[0], idx[0] + a.batch)):  # contiguous hyperslab
            ids = ids_ds[idx[0]:idx[0] + a.batch]
            lab = lab_ds[idx[0]:idx[0] + a.batch]
        else:
            ids = np.stack([ids_ds[j] for j in idx])
            lab = np.array([lab_ds[j] for j in idx])
        ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        if int(ids.max()) >= a.vocab or int(ids.min()) < 0:
            sys.exit(f"{a.data}: /train/input_ids has ids outside [0, {a.vocab})")
        out.append((ids, torch.from_numpy(np.asarray(lab, dtype=np.int64))))
    return out


def load_batches(a, count):
    rng = np.random.default_rng(a.seed)
    if a.data is None:
        a.seq_len = a.seq_len or 2048
        a.vocab = a.vocab or 32
        a.classes = a.classes or 10
        return synthetic_batches(a, count, rng)
    import h5py
    with h5py.File(a.data, "r") as f:
        attrs = f["/"].attrs
        a.seq_len = a.seq_len or int(attrs.get("seq_len", f["/train/input_ids"].shape[1]))
        a.vocab = a.vocab or int(attrs.get("vocab_size", 32))
        a.classes = a.classes or int(attrs.get("num_classes", 10))
        return file_batches(a, count, f)


# ---------------------------------------------------------------------------------------------

def main(a):
    if a.attention not in ATTENTION_CORES:
        sys.exit(f"--attention {a.attention}: unknown attention kind "
                 f"(registered: {', '.join(ATTENTION_CORES)})")
    if a.sdpa and not HAVE_SDPA:
        sys.exit(f"--sdpa: torch {torch.__version__} has no "
                 "torch.nn.functional.scaled_dot_product_attention (added in torch 2.0); "
                 "run without --sdpa for the explicit matmul/softmax attention")
    if a.sdpa and a.attention != "softmax":
        sys.exit(f"--sdpa applies to --attention softmax only, not {a.attention}")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if a.bf16 and dev.type != "cuda":
        sys.exit("--bf16 needs --device cuda")

    blas, blas_fast, blas_details = detect_blas()
    if dev.type == "cuda":  # the CPU BLAS plays no part
        blas, blas_fast, blas_details = "cuBLAS (" + torch.cuda.get_device_name(0) + ")", True, []
    for line in blas_details:
        print("# " + line, file=sys.stderr)
    if not blas_fast:
        bar = "!" * 78
        print(f"{bar}\nWARNING: torch is NOT using OpenBLAS/MKL: {blas}\n"
              "Debian's torch 1.13 calls whatever libblas.so.3 the alternatives system selects; "
              "the reference\nBLAS is ~4x slower and makes this comparison meaningless. Install "
              "libopenblas0-pthread\nor select it: update-alternatives --config "
              f"libblas.so.3-x86_64-linux-gnu\n{bar}", file=sys.stderr)

    total = a.warmup_steps + a.steps
    batches = [(i.to(dev), l.to(dev)) for i, l in load_batches(a, min(total, 8))]
    model = Classifier(a).to(dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.0)
    nparams = sum(p.numel() for p in model.parameters())

    sbm_cores = [m for m in model.modules() if isinstance(m, SBMCore)]
    times, densities, loss = [], [], float("nan")
    for step in range(total):
        ids, labels = batches[step % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            out = model(ids)
        l = F.cross_entropy(out.float(), labels)
        if sbm_cores:  # sparsity regulariser: mean density over layers and heads, through the STE
            density = torch.cat([c.density for c in sbm_cores]).mean()
            l = l + a.sparsity_weight * density
            for c in sbm_cores:
                c.density = None
        l.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        loss = float(l.detach())
        if step >= a.warmup_steps:
            times.append(dt)
            if sbm_cores:
                densities.append(float(density.detach()))

    step_s = statistics.mean(times) if times else float("nan")
    tok = a.batch * a.seq_len / step_s if times else float("nan")
    attn_impl = "sdpa" if a.sdpa else ("dense" if sbm_cores else "explicit")
    mean_density = statistics.mean(densities) if densities else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    extra = ""
    if sbm_cores:
        extra = (f" k={a.clusters} edge_floor={a.edge_floor} sparsity_weight={a.sparsity_weight}"
                 f" density={mean_density:.4f}" if mean_density is not None else " density=n/a")
    where = a.device + ("/bf16" if a.bf16 else "")
    print(f"pytorch {torch.__version__} {where} threads={a.threads} batch={a.batch} "
          f"seq_len={a.seq_len} attention={a.attention}/{attn_impl} params={nparams} "
          f"steps={len(times)} (+{a.warmup_steps} warmup) step_s={step_s:.4f} "
          f"(min {min(times or [0]):.4f} max {max(times or [0]):.4f}) tokens/s={tok:.1f} "
          f"loss={loss:.4f}{extra} peak_rss_mb={peak_rss_mb:.0f} blas={blas}")
    print(json.dumps({"impl": "pytorch", "device": a.device, "bf16": a.bf16,
                      "threads": a.threads, "batch": a.batch,
                      "seq_len": a.seq_len, "step_s": step_s, "tokens_per_s": tok,
                      "torch": torch.__version__, "blas": blas,
                      "attention": a.attention, "attn_impl": attn_impl,
                      "density": mean_density, "peak_rss_mb": round(peak_rss_mb, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main(ARGS)
