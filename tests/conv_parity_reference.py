#!/usr/bin/python3
"""PyTorch reference for the conv2d cases of tests/test_torch_parity.cpp.

Run with Debian's /usr/bin/python3 (python3-torch):

    conv_parity_reference.py IN.json OUT.json

IN.json: {"cases": [{"name", "layers": [{"w", "b" (absent: no bias), "stride", "padding"}, ...],
                     "relu": bool (a ReLU after every layer but the last), "x", "grad"}, ...],
          "init": {"in", "out", "kernel", "seed"}}
with tensors as {"shape": [...], "data": [flat row-major list]}. Each case runs the layers
through F.conv2d in float64, then backward of sum(y * grad), and gives back y and the gradients
of x and of every layer's weight and bias. "init" builds torch.nn.Conv2d(in, out, kernel) (the
default init) and gives back the statistics of its weight and bias.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from torch_model_reference import dump, load, read_input, write_output  # noqa: E402


def run_case(case):
    x = load(case["x"]).requires_grad_(True)
    layers = []
    for layer in case["layers"]:
        w = load(layer["w"]).requires_grad_(True)
        b = load(layer["b"]).requires_grad_(True) if "b" in layer else None
        layers.append((w, b, layer["stride"], layer["padding"]))
    h = x
    for k, (w, b, stride, padding) in enumerate(layers):
        h = F.conv2d(h, w, b, stride=stride, padding=padding)
        if case["relu"] and k + 1 < len(layers):
            h = torch.relu(h)
    (h * load(case["grad"])).sum().backward()
    out = {"y": dump(h), "dx": dump(x.grad), "layers": []}
    for w, b, _, _ in layers:
        out["layers"].append({"dw": dump(w.grad), "db": dump(b.grad) if b is not None else None})
    return out


def init_stats(cfg):
    torch.manual_seed(cfg["seed"])
    conv = torch.nn.Conv2d(cfg["in"], cfg["out"], cfg["kernel"])  # float64: read_input

    def stats(t):
        t = t.detach().reshape(-1)
        return {"shape": list(t.shape), "max_abs": t.abs().max().item(), "mean": t.mean().item(),
                "std": t.std(unbiased=False).item()}
    return {"weight": stats(conv.weight), "bias": stats(conv.bias),
            "weight_shape": list(conv.weight.shape)}


def main():
    cfg = read_input("conv_parity_reference.py")
    write_output({
        "torch_version": torch.__version__,
        "cases": {c["name"]: run_case(c) for c in cfg["cases"]},
        "init": init_stats(cfg["init"]),
    })


if __name__ == "__main__":
    main()
