#!/usr/bin/python3
"""PyTorch reference for tests/test_lm_parity.cpp (DecoderLM parity).

Run with Debian's /usr/bin/python3 (python3-torch):

    lm_parity_reference.py IN.json OUT.json

IN.json (written by the C++ test):
    {"models": [{"name": str,
                 "config": {"vocab_size", "d_model", "n_layers", "n_heads", "seq_len",
                            "variant": softmax|sigmoid|softmax1, "position": rope|alibi|learned,
                            "placement": pre|post|hybrid, "norm": layer|rms,
                            "qk_norm": bool, "qk_norm_kind": layer|rms, "layer_scale": bool,
                            "mlp": gelu|swiglu, "tied_head": bool, "norm_eps", "rope_base",
                            "sigmoid_bias_mode": fixed|learnable|per_row (sigmoid; default fixed)},
                 "params": [{"name", "weight_decay", "shape", "data"}, ...],
                 "ids": {"shape", "data"}, "targets": {"shape", "data"}}, ...],
     "adamw": {"lr", "betas", "eps", "weight_decay", "steps"},
     "device": "cpu" (default) or "cuda": where torch computes (always in float64)}

For every model this script builds the same decoder-only LM in torch float64 from the given
weights, looked up by their dotted names, written from the maths and not from attnlab's code
(the blocks, the AdamW run and the JSON driver are torch_model_reference.py's, shared with
vit_parity_reference.py):
layer norm (F.layer_norm) or RMS norm (by hand), RoPE in the rotate-half layout, ALiBi with the
paper's get_slopes, the causal mask, softmax / softmax_1 / sigmoid attention written out
explicitly (sigmoid's b fixed at -ln seq_len, a learnable parameter per head, or per row -ln of
the keys the row sees), GELU (tanh) or SwiGLU MLP, pre- / post- / hybrid-norm blocks with optional
LayerScale, tied or untied head. It first checks that the parameter names, shapes and
weight-decay flags are exactly the ones this model should have (an "error" entry otherwise).
It computes the logits, the mean cross-entropy and every gradient, then runs `steps` steps of
torch.optim.AdamW (two groups: weight decay on the flagged params only, foreach=False),
recording the loss before each step.

OUT.json: {"torch_version": str,
           "models": {name: {"error": str} or
                            {"logits", "loss", "grads": {param name: tensor}, "losses": [...]}}}
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


class DecoderLM(Transformer):
    @staticmethod
    def expected_params(c):
        D, V, T = c["d_model"], c["vocab_size"], c["seq_len"]
        e = ExpectedParams({"tok_emb.weight": ([V, D], False)})
        if c["position"] == "learned":
            e["pos_emb.weight"] = ([T, D], False)
        e.blocks_and_final_norm(c)
        if not c["tied_head"]:
            e.linear("head", D, V, False)
        return e

    def batch(self, m):
        return load(m["ids"], torch.int64), load(m["targets"], torch.int64)

    def rope(self, x):
        # 1-D: the token index t.
        return rope_rotate(x, torch.arange(x.shape[-2], dtype=torch.float64), self.c["rope_base"])

    def alibi_bias(self, T):
        # -slope_h * |i - j|
        i = torch.arange(T).view(T, 1)
        j = torch.arange(T).view(1, T)
        return -self.slopes.view(self.H, 1, 1) * (i - j).abs().to(torch.float64).view(1, T, T)

    def visible(self, T):
        # causal: key j is visible to query i for j <= i
        i = torch.arange(T).view(T, 1)
        j = torch.arange(T).view(1, T)
        return (j <= i).view(1, 1, T, T)

    def sigmoid_bias(self, T):
        return -math.log(self.c["seq_len"])  # b = -ln(n)

    def logits(self, ids):
        c = self.c
        T = ids.shape[1]
        x = self.P["tok_emb.weight"][ids]
        if c["position"] == "learned":
            x = x + self.P["pos_emb.weight"][:T]
        x = self.blocks_and_final_norm(x)
        w = self.P["tok_emb.weight"] if c["tied_head"] else self.P["head.weight"]
        return torch.matmul(x, w.t())

    def loss(self, logits, targets):
        V = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))


if __name__ == "__main__":
    main("lm_parity_reference.py", DecoderLM)
