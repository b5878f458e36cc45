#!/usr/bin/env python3
"""torch's fake quantisers on the inputs tests/test_fake_quant.cpp writes: in.json holds
{"cases": [{"x": [...], "scale": s, "zero_point": z, "quant_max": q}],
 "weights": [{"w": [...], "shape": [r, c], "bits": b}]}; out.json gets
{"affine": [[...]], "weight_tensor": [[...]], "weight_channel": [[...]]}.

Activations: torch.fake_quantize_per_tensor_affine(x, s, z, 0, q). Weights, symmetric with the
restricted grid [-(2^(b-1) - 1), 2^(b-1) - 1]: per tensor with s = max|W| / (2^(b-1) - 1), and
torch.fake_quantize_per_channel_affine along dim 0 with s_r = max_j |W_rj| / (2^(b-1) - 1).
"""
import json
import sys

import torch


def main(inp, out):
    spec = json.load(open(inp))
    res = {"affine": [], "weight_tensor": [], "weight_channel": []}
    for c in spec["cases"]:
        x = torch.tensor(c["x"], dtype=torch.float32)
        y = torch.fake_quantize_per_tensor_affine(x, c["scale"], int(c["zero_point"]), 0, int(c["quant_max"]))
        res["affine"].append(y.tolist())
    for c in spec["weights"]:
        w = torch.tensor(c["w"], dtype=torch.float32).reshape(c["shape"])
        q = 2 ** (c["bits"] - 1) - 1
        s = (w.abs().max() / q).item()
        res["weight_tensor"].append(torch.fake_quantize_per_tensor_affine(w, s, 0, -q, q).flatten().tolist())
        sr = (w.abs().amax(dim=1) / q).to(torch.float32)
        zr = torch.zeros(w.shape[0], dtype=torch.int32)
        res["weight_channel"].append(torch.fake_quantize_per_channel_affine(w, sr, zr, 0, -q, q).flatten().tolist())
    json.dump(res, open(out, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
