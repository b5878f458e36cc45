#!/usr/bin/python3
"""PyTorch reference for tests/test_ctc.cpp.

Run with Debian's /usr/bin/python3 (python3-torch):

    ctc_reference.py IN.json OUT.json

IN.json: {"cases": [{"name", "x": {"shape": [B, T, C], "data": [...]}, "targets": [flat labels],
                     "target_lengths": [B], "input_lengths": [B], "blank", "zero_infinity",
                     "weights": [B]}, ...]}
For each case and each reduction (mean, sum, none) this computes, in float64,
    loss = F.ctc_loss(log_softmax(x) as [T, B, C], targets, input_lengths, target_lengths,
                      blank, reduction, zero_infinity)
and the gradient with respect to the logits x of loss (mean, sum) or of Σ_b weights_b·loss_b
(none). The gradient goes through log_softmax on purpose: torch's ctc_loss backward returns
exp(lp) − γ, the gradient with respect to a log_softmax's input, not the one with respect to
log_probs; through log_softmax both conventions give the same ∂/∂x.
OUT.json: {"torch_version", "cases": {name: {reduction: {"loss": tensor, "grad": tensor}}}},
non-finite numbers written as the strings "inf", "-inf" and "nan" (JSON has none).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from torch_model_reference import load, read_input, write_output  # noqa: E402


def encode(v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def dump_any(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape), "data": [encode(v) for v in t.reshape(-1).tolist()]}


def run(case, reduction):
    x = load(case["x"]).requires_grad_(True)
    lp = torch.log_softmax(x, dim=-1).transpose(0, 1)  # [T, B, C], as torch wants it
    targets = torch.tensor(case["targets"], dtype=torch.long)
    loss = F.ctc_loss(lp, targets, torch.tensor(case["input_lengths"], dtype=torch.long),
                      torch.tensor(case["target_lengths"], dtype=torch.long),
                      blank=case["blank"], reduction=reduction,
                      zero_infinity=bool(case["zero_infinity"]))
    objective = loss if reduction != "none" else (loss * torch.tensor(case["weights"])).sum()
    objective.backward()
    return {"loss": dump_any(loss), "grad": dump_any(x.grad)}


def main():
    cfg = read_input("ctc_reference.py")
    out = {"torch_version": torch.__version__, "cases": {}}
    for case in cfg["cases"]:
        out["cases"][case["name"]] = {r: run(case, r) for r in ("mean", "sum", "none")}
    write_output(out)


if __name__ == "__main__":
    main()
