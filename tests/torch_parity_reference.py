#!/usr/bin/python3
"""PyTorch reference for tests/test_torch_parity.cpp.

Run with Debian's /usr/bin/python3 (python3-torch):

    torch_parity_reference.py IN.json OUT.json

IN.json (written by the C++ test) holds the config, every parameter, the input x and the
targets, each tensor as {"shape": [...], "data": [flat row-major list]}. This script builds
the same one-block transformer in torch float64, with the three attention variants written
out explicitly (no SDPA), runs forward and backward and writes OUT.json with the loss, the
logits and the gradient of every parameter and of x. The tensor and file I/O are
torch_model_reference.py's.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from torch_model_reference import dump, load, read_input, write_output  # noqa: E402

PARAM_NAMES = ["ln_w", "ln_b", "Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo",
               "ln2_w", "ln2_b", "W1", "b1", "W2", "b2", "Wout"]


def visible_mask(B, N, M, causal, lengths):
    """[B, 1, N, M] bool: True where key j is visible to query i of batch b."""
    vis = torch.ones(B, 1, N, M, dtype=torch.bool)
    i = torch.arange(N).view(N, 1)
    j = torch.arange(M).view(1, M)
    if causal:
        vis = vis & (j <= i + (M - N)).view(1, 1, N, M)
    if lengths:
        L = torch.tensor(lengths).view(B, 1, 1, 1)
        vis = vis & (j.view(1, 1, 1, M) < L)
    return vis


def attention(q, k, v, variant, causal, lengths, scale, sigmoid_bias):
    """q [B, H, N, D], k and v [B, H, M, D] -> [B, H, N, D]."""
    B, H, N, D = q.shape
    M = k.shape[2]
    s = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, N, M]
    vis = visible_mask(B, N, M, causal, lengths).expand(B, H, N, M)
    if variant == "softmax":
        p = torch.softmax(s.masked_fill(~vis, float("-inf")), dim=-1)
    elif variant == "softmax1":
        # An extra key with logit 0 and value 0: softmax over [S, 0], then drop that column.
        s = s.masked_fill(~vis, float("-inf"))
        s = torch.cat([s, torch.zeros(B, H, N, 1, dtype=s.dtype)], dim=-1)
        p = torch.softmax(s, dim=-1)[..., :M]
    elif variant == "sigmoid":
        p = torch.sigmoid(s + sigmoid_bias).masked_fill(~vis, 0.0)
    else:
        raise ValueError("unknown variant " + variant)
    return torch.matmul(p, v)


def main():
    cfg = read_input("torch_parity_reference.py")

    B, T, C, H = cfg["B"], cfg["T"], cfg["C"], cfg["H"]
    V = cfg["V"]
    Dh = C // H
    variant = cfg["variant"]
    causal = bool(cfg["causal"])
    lengths = cfg["key_padding_lengths"]
    scale = cfg["scale"] if cfg["scale"] != 0 else 1.0 / math.sqrt(Dh)
    sigmoid_bias = cfg["sigmoid_bias"]
    eps = cfg["ln_eps"]

    p = {n: load(cfg["params"][n]).requires_grad_(True) for n in PARAM_NAMES}
    x = load(cfg["x"]).requires_grad_(True)
    targets = load(cfg["targets"], torch.int64)
    ignore_index = cfg["ignore_index"]

    h = F.layer_norm(x, (C,), p["ln_w"], p["ln_b"], eps)

    def heads(t):
        return t.reshape(B, T, H, Dh).permute(0, 2, 1, 3)

    q = heads(torch.matmul(h, p["Wq"]) + p["bq"])
    k = heads(torch.matmul(h, p["Wk"]) + p["bk"])
    v = heads(torch.matmul(h, p["Wv"]) + p["bv"])
    o = attention(q, k, v, variant, causal, lengths, scale, sigmoid_bias)
    o = o.permute(0, 2, 1, 3).reshape(B, T, C)
    x2 = x + (torch.matmul(o, p["Wo"]) + p["bo"])

    h2 = F.layer_norm(x2, (C,), p["ln2_w"], p["ln2_b"], eps)
    m = F.gelu(torch.matmul(h2, p["W1"]) + p["b1"], approximate="tanh")
    x3 = x2 + torch.matmul(m, p["W2"]) + p["b2"]
    logits = torch.matmul(x3, p["Wout"])
    loss = F.cross_entropy(logits.reshape(B * T, V), targets, ignore_index=ignore_index)
    loss.backward()

    grads = {n: dump(p[n].grad) for n in PARAM_NAMES}
    grads["x"] = dump(x.grad)
    out = {
        "torch_version": torch.__version__,
        "loss": dump(loss),
        "logits": dump(logits),
        "grads": grads,
    }
    write_output(out)


if __name__ == "__main__":
    main()
