"""PyTorch's scaled_dot_product_attention forward + backward on the shapes of
bench/bench_attn_gpu.c (same n, batch, heads, head size; no mask, no dropout), in fp32 and bf16,
printing time and TFLOP/s with the same FLOP count (4 B H n^2 dh forward, 2.5x backward).
usage: python3 bench/torch_sdpa.py [--dh D] [--heads H] [--tokens T] [--max-n N]
"""
import argparse
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--dh", type=int, default=64)
ap.add_argument("--heads", type=int, default=8)
ap.add_argument("--tokens", type=int, default=16384)
ap.add_argument("--max-n", type=int, default=16384)
a = ap.parse_args()
dev = torch.device("cuda")
print("# torch %s scaled_dot_product_attention on %s, H %d, dh %d, %d tokens per batch"
      % (torch.__version__, torch.cuda.get_device_name(0), a.heads, a.dh, a.tokens))
print("%8s %4s %6s %12s %12s %10s %10s" % ("n", "B", "dtype", "fwd_ms", "fwd+bwd_ms",
                                           "fwd_TFLOPs", "total_TFLOPs"))
for dtype in (torch.float32, torch.bfloat16):
    n = 1024
    while n <= a.max_n:
        B = max(1, a.tokens // n)
        q, k, v = (torch.randn(B, a.heads, n, a.dh, device=dev, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        g = torch.randn(B, a.heads, n, a.dh, device=dev, dtype=dtype)
        reps = 10 if n <= 4096 else 3

        def fwd():
            return F.scaled_dot_product_attention(q, k, v)

        def step():
            F.scaled_dot_product_attention(q, k, v).backward(g)

        step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(reps):
                fwd()
        torch.cuda.synchronize()
        tf = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
        tt = (time.perf_counter() - t0) / reps
        ff = 4.0 * B * a.heads * n * n * a.dh
        print("%8d %4d %6s %12.3f %12.3f %10.2f %10.2f" % (
            n, B, "fp32" if dtype == torch.float32 else "bf16", 1e3 * tf, 1e3 * tt,
            1e-12 * ff / tf, 1e-12 * 3.5 * ff / tt), flush=True)
        del q, k, v, g
        n *= 2
