#!/usr/bin/python3
"""PyTorch reference for tests/test_vit_parity.cpp (VisionTransformer parity).

Run with Debian's /usr/bin/python3 (python3-torch):

    vit_parity_reference.py IN.json OUT.json

IN.json (written by the C++ test):
    {"models": [{"name": str,
                 "config": {"image_height", "image_width", "channels", "patch_size", "n_classes",
                            "d_model", "n_layers", "n_heads",
                            "variant": softmax|sigmoid|softmax1,
                            "position": none|learned|sinusoidal|rope|alibi,
                            "pooling": cls|mean, "placement": pre|post|hybrid, "norm": layer|rms,
                            "qk_norm": bool, "qk_norm_kind": layer|rms, "layer_scale": bool,
                            "mlp": gelu|swiglu, "norm_eps", "rope_base", "label_smoothing"},
                 "params": [{"name", "weight_decay", "shape", "data"}, ...],
                 "images": {"shape", "data"}, "labels": {"shape", "data"}}, ...],
     "adamw": {"lr", "betas", "eps", "weight_decay", "steps"},
     "device": "cpu" (default) or "cuda": where torch computes (always in float64)}

For every model this script builds the ViT in torch float64 from the given weights, by their
dotted names, written from the maths and not from attnlab's code (the blocks, the AdamW run and
the JSON driver are torch_model_reference.py's, shared with lm_parity_reference.py): the patch
embedding is a Conv2d (stride = kernel = patch size) whose weight is the Linear's reshaped to
[D, C, p, p]; an optional class token; positions: a learned [T, D] table, the 2-D sinusoidal
table (first half of the channels the 1-D table of the patch row, second half of its column,
class token zeros), 2-D axial RoPE (first half of each head's dims rotated by the row, second
half by the column, rotate-half layout; class token not rotated) or 2-D ALiBi (-slope *
Euclidean distance between patch centres, 0 for the class token); bidirectional softmax /
softmax_1 / sigmoid attention written out; pre / post / hybrid blocks with optional LayerScale;
final norm (not post), class token or mean pooling, a Linear head; the loss is
F.cross_entropy(label_smoothing=eps).
It checks the parameter names, shapes and weight-decay flags, computes the logits, the loss and
every gradient, then runs `steps` steps of torch.optim.AdamW, recording the loss before each.

OUT.json: {"torch_version": str,
           "models": {name: {"error": str} or {"logits", "loss", "grads", "losses"}}}
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ beside the sources
from torch_model_reference import (ExpectedParams, Transformer, load, main,  # noqa: E402
                                   rope_rotate)


def grid(c):
    rows, cols = c["image_height"] // c["patch_size"], c["image_width"] // c["patch_size"]
    prefix = 1 if c["pooling"] == "cls" else 0
    return rows, cols, prefix


def sincos_1d(positions, d):
    """[n, d]: sin(pos * w_i) at column 2i, cos at 2i + 1, w_i = 10000^(-2i/d)."""
    i = torch.arange(d // 2, dtype=torch.float64)
    w = 10000.0 ** (-2.0 * i / d)
    ang = positions.view(-1, 1) * w.view(1, -1)
    return torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(len(positions), d)


class VisionTransformer(Transformer):
    @staticmethod
    def expected_params(c):
        D = c["d_model"]
        rows, cols, prefix = grid(c)
        e = ExpectedParams()
        e.linear("patch_embed", c["channels"] * c["patch_size"] ** 2, D, True)
        if prefix:
            e["cls_token"] = ([D], False)
        if c["position"] == "learned":
            e["pos_emb"] = ([prefix + rows * cols, D], False)
        e.blocks_and_final_norm(c)
        e.linear("head", D, c["n_classes"], True)
        return e

    def __init__(self, c, P):
        super().__init__(c, P)
        self.rows, self.cols, self.prefix = grid(c)
        self.T = self.prefix + self.rows * self.cols
        n = self.rows * self.cols
        self.patch_row = torch.arange(n, dtype=torch.float64).div(self.cols, rounding_mode="floor")
        self.patch_col = torch.arange(n, dtype=torch.float64).remainder(self.cols)

    def batch(self, m):
        return load(m["images"]), load(m["labels"], torch.int64)

    def sinusoidal_2d(self):
        half = self.D // 2
        pe = torch.cat([sincos_1d(self.patch_row, half), sincos_1d(self.patch_col, half)], dim=-1)
        return torch.cat([torch.zeros(self.prefix, self.D), pe], dim=0)

    def alibi_bias(self, T):
        # -slope_h * the Euclidean distance between patch centres, 0 for the class token.
        dr = self.patch_row.view(-1, 1) - self.patch_row.view(1, -1)
        dc = self.patch_col.view(-1, 1) - self.patch_col.view(1, -1)
        dist = torch.zeros(self.T, self.T)
        dist[self.prefix:, self.prefix:] = torch.sqrt(dr ** 2 + dc ** 2)
        return -self.slopes.view(-1, 1, 1) * dist  # [H, T, T]

    def rope(self, x):
        # 2-D axial: the first half of each head's dims rotated by the row, the second by the column.
        base, p, h = self.c["rope_base"], self.prefix, self.Dh // 2
        patches = x[..., p:, :]
        rotated = torch.cat([rope_rotate(patches[..., :h], self.patch_row, base),
                             rope_rotate(patches[..., h:], self.patch_col, base)], dim=-1)
        return torch.cat([x[..., :p, :], rotated], dim=-2)

    def visible(self, T):
        return None  # bidirectional, no mask

    def sigmoid_bias(self, T):
        return -math.log(T)  # b = -ln(tokens)

    def logits(self, images):
        c, P = self.c, self.P
        ps = c["patch_size"]
        w = P["patch_embed.weight"].reshape(self.D, c["channels"], ps, ps)
        x = F.conv2d(images, w, P["patch_embed.bias"], stride=ps)  # [B, D, rows, cols]
        x = x.flatten(2).transpose(1, 2)  # [B, rows*cols, D], row-major patches
        if self.prefix:
            x = torch.cat([P["cls_token"].view(1, 1, -1).expand(x.shape[0], 1, -1), x], dim=1)
        if c["position"] == "learned":
            x = x + P["pos_emb"]
        elif c["position"] == "sinusoidal":
            x = x + self.sinusoidal_2d()
        x = self.blocks_and_final_norm(x)
        x = x[:, 0] if self.prefix else x.mean(dim=1)
        return self.linear("head", x)

    def loss(self, logits, labels):
        return F.cross_entropy(logits, labels, label_smoothing=self.c["label_smoothing"])


if __name__ == "__main__":
    main("vit_parity_reference.py", VisionTransformer)
