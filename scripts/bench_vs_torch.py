#!/usr/bin/env python3
"""Attention speed: attnlab's flash kernels next to PyTorch on the same GPU, in one call.

On the reference shapes (B x H x N x D = 2 x 16 x 4096 x {64, 128}, full and causal),
bf16, times forward and forward+backward (CUDA events, warm-up, median of repeats) of
  - PyTorch SDPA with the FlashAttention-2 backend and with the cuDNN backend (softmax),
  - eager sigmoid attention  P = sigmoid(s*q.k + b), b = -ln N, masked entries 0,
  - eager softmax_1          P = e^x / (1 + sum e^x)  (stable form with m = max(0, max x)),
runs `attnlab bench attention --csv` on the same shapes, and prints TFLOP/s
(FLOPs = 4*B*H*N^2*D, halved when causal, x3.5 for fwd+bwd) with the ratios attnlab / torch:
softmax against FA2 and cuDNN, sigmoid and softmax_1 against their eager versions.

    python3 scripts/bench_vs_torch.py --attnlab build-gpu/src/attnlab [--seq 4096] [--head-dim 64 128]
"""
import argparse
import csv
import io
import math
import subprocess
import sys

import torch
import torch.nn.functional as F


def flops(b, h, n, d, causal):
    return 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)


def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])


def causal_mask(n, device):
    # True where key j is invisible to query i (j > i; N == M so top-left == bottom-right).
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def eager_sigmoid(q, k, v, causal, bias):
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
    p = torch.sigmoid(s)
    if causal:
        p = p.masked_fill(causal_mask(q.shape[-2], q.device), 0.0)
    return p @ v


def eager_softmax1(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if causal:
        s = s.masked_fill(causal_mask(q.shape[-2], q.device), float("-inf"))
    m = s.amax(-1, keepdim=True).clamp_min(0)
    e = torch.exp(s - m)
    p = e / (torch.exp(-m) + e.sum(-1, keepdim=True))
    return p @ v


def sdpa_with(backend):
    from torch.nn.attention import sdpa_kernel

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


def time_torch(fn, b, h, n, d, causal, warmup, repeats):
    """(fwd ms, fwd+bwd ms) or None when the backend refuses the shape."""
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(lo, hi):
        x = torch.rand(b, h, n, d, device="cuda", generator=gen, dtype=torch.float32)
        return (lo + (hi - lo) * x).to(torch.bfloat16)

    q, k, v, g = rand(-2, 2), rand(-2, 2), rand(-1, 1), rand(-1, 1)
    try:
        with torch.no_grad():
            t_fwd = median_ms(lambda: fn(q, k, v, causal), warmup, repeats)
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

        def fwd_bwd():
            out = fn(qg, kg, vg, causal)
            out.backward(g)
            qg.grad = kg.grad = vg.grad = None

        t_all = median_ms(fwd_bwd, warmup, repeats)
    except RuntimeError as e:  # e.g. a backend not available for this GPU / dtype / shape
        print(f"  (skipped: {str(e).splitlines()[0][:120]})", file=sys.stderr)
        return None
    finally:
        torch.cuda.empty_cache()
    return t_fwd, t_all


def run_attnlab(binary, b, h, n, dims, warmup, repeats):
    cmd = [binary, "bench", "attention", "--csv", "-b", str(b), "--heads", str(h), "-n", str(n),
           "--warmup", str(warmup), "--repeats", str(repeats), "-d"] + [str(d) for d in dims]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"attnlab bench attention failed ({res.returncode}):\n{res.stderr}", file=sys.stderr)
        return {}
    rows = {}
    for r in csv.DictReader(io.StringIO(res.stdout)):
        rows[(r["variant"], int(r["head_dim"]), r["mask"])] = (float(r["fwd_ms"]), float(r["fwd_bwd_ms"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attnlab", default="build-gpu/src/attnlab", help="the attnlab binary")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--head-dim", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_vs_torch: needs a CUDA device", file=sys.stderr)
        return 1
    from torch.nn.attention import SDPBackend

    b, h, n = a.batch, a.heads, a.seq
    bias = -math.log(n)
    ours = run_attnlab(a.attnlab, b, h, n, a.head_dim, a.warmup, a.repeats)
    print(f"# attention on {torch.cuda.get_device_name()}: bf16, B {b}, H {h}, N = M = {n}; "
          f"torch {torch.__version__}; median of {a.repeats} after {a.warmup} warm-up")
    print("# TFLOP/s with FLOPs = 4*B*H*N^2*D (halved when causal, x3.5 for fwd+bwd); ratio = attnlab / torch\n")
    print("| D | mask | attnlab variant | fwd | fwd+bwd | torch reference | fwd | fwd+bwd | ratio fwd | ratio fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    refs = [
        ("softmax", "SDPA flash (FA2)", sdpa_with(SDPBackend.FLASH_ATTENTION)),
        ("softmax", "SDPA cuDNN", sdpa_with(SDPBackend.CUDNN_ATTENTION)),
        ("sigmoid", "eager sigmoid", lambda q, k, v, c: eager_sigmoid(q, k, v, c, bias)),
        ("softmax1", "eager softmax_1", eager_softmax1),
    ]
    for d in a.head_dim:
        for mask in ("full", "causal"):
            causal = mask == "causal"
            fl = flops(b, h, n, d, causal)
            for variant, ref_name, fn in refs:
                t = time_torch(fn, b, h, n, d, causal, a.warmup, a.repeats)
                mine = ours.get((variant, d, mask))
                tf = lambda ms, mult=1.0: mult * fl / (ms * 1e-3) / 1e12
                mine_s = (f"{tf(mine[0]):.0f} | {tf(mine[1], 3.5):.0f}") if mine else "n/a | n/a"
                ref_s = (f"{tf(t[0]):.0f} | {tf(t[1], 3.5):.0f}") if t else "n/a | n/a"
                ratio = (f"{t[0] / mine[0]:.2f} | {t[1] / mine[1]:.2f}") if (t and mine) else "n/a | n/a"
                print(f"| {d} | {mask} | {variant} | {mine_s} | {ref_name} | {ref_s} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
