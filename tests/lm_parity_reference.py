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
                            "mlp": gelu|swiglu, "tied_head": bool, "norm_eps", "rope_base"},
                 "params": [{"name", "weight_decay", "shape", "data"}, ...],
                 "ids": {"shape", "data"}, "targets": {"shape", "data"}}, ...],
     "adamw": {"lr", "betas", "eps", "weight_decay", "steps"},
     "device": "cpu" (default) or "cuda": where torch computes (always in float64)}

For every model this script builds the same decoder-only LM in torch float64 from the given
weights, looked up by their dotted names, written from the maths and not from attnlab's code:
layer norm (F.layer_norm) or RMS norm (by hand), RoPE in the rotate-half layout, ALiBi with the
paper's get_slopes, the causal mask, softmax / softmax_1 / sigmoid attention written out
explicitly, GELU (tanh) or SwiGLU MLP, pre- / post- / hybrid-norm blocks with optional
LayerScale, tied or untied head. It first checks that the parameter names, shapes and
weight-decay flags are exactly the ones this model should have (an "error" entry otherwise).
It computes the logits, the mean cross-entropy and every gradient, then runs `steps` steps of
torch.optim.AdamW (two groups: weight decay on the flagged params only, foreach=False),
recording the loss before each step.

OUT.json: {"torch_version": str,
           "models": {name: {"error": str} or
                            {"logits", "loss", "grads": {param name: tensor}, "losses": [...]}}}
"""
import json
import math
import sys
import traceback

import torch
import torch.nn.functional as F


def load(t, dtype=torch.float64):
    return torch.tensor(t["data"], dtype=dtype).reshape(t["shape"])


def dump(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def alibi_slopes(n):
    """get_slopes from the ALiBi paper's reference code (Press et al., 2022)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][:n - closest]


def swiglu_hidden(d):
    # 8/3·d rounded up to a multiple of 8 (the parameter count of a 4·d GELU MLP).
    return int(math.ceil(8 * d / 3 / 8)) * 8


def expected_params(c):
    """name -> (shape, weight_decay): matrices of linear layers decay; embeddings, norms,
    biases and LayerScale do not."""
    D, V, T, H = c["d_model"], c["vocab_size"], c["seq_len"], c["n_heads"]
    Dh = D // H
    e = {"tok_emb.weight": ([V, D], False)}
    if c["position"] == "learned":
        e["pos_emb.weight"] = ([T, D], False)

    def norm(prefix, dim, kind):
        e[prefix + ".weight"] = ([dim], False)
        if kind == "layer":
            e[prefix + ".bias"] = ([dim], False)

    def linear(prefix, n_in, n_out, bias):
        e[prefix + ".weight"] = ([n_out, n_in], True)
        if bias:
            e[prefix + ".bias"] = ([n_out], False)

    for l in range(c["n_layers"]):
        p = "blocks.%d." % l
        if c["layer_scale"]:
            e[p + "gamma1"] = ([D], False)
            e[p + "gamma2"] = ([D], False)
        norm(p + "norm1", D, c["norm"])
        norm(p + "norm2", D, c["norm"])
        for w in ("wq", "wk", "wv", "wo"):
            linear(p + "attn." + w, D, D, True)
        if c["qk_norm"]:
            norm(p + "attn.q_norm", Dh, c["qk_norm_kind"])
            norm(p + "attn.k_norm", Dh, c["qk_norm_kind"])
        if c["mlp"] == "gelu":
            linear(p + "mlp.fc1", D, 4 * D, True)
            linear(p + "mlp.fc2", 4 * D, D, True)
        else:
            h = swiglu_hidden(D)
            linear(p + "mlp.fc1", D, h, False)
            linear(p + "mlp.gate", D, h, False)
            linear(p + "mlp.fc2", h, D, False)
        if c["placement"] == "hybrid":
            norm(p + "post_norm1", D, c["norm"])
            norm(p + "post_norm2", D, c["norm"])
    if c["placement"] != "post":
        norm("final_norm", D, c["norm"])
    if not c["tied_head"]:
        linear("head", D, V, False)
    return e


def check_params(c, given):
    exp = expected_params(c)
    problems = []
    for n in sorted(set(exp) - set(given)):
        problems.append("missing " + n)
    for n in sorted(set(given) - set(exp)):
        problems.append("unexpected " + n)
    for n in sorted(set(exp) & set(given)):
        shape, decay = exp[n]
        if list(given[n]["shape"]) != shape:
            problems.append("%s has shape %s, expected %s" % (n, given[n]["shape"], shape))
        if bool(given[n]["weight_decay"]) != decay:
            problems.append("%s has weight_decay %s, expected %s" % (n, given[n]["weight_decay"], decay))
    if problems:
        raise ValueError("parameter set: " + "; ".join(problems))


class Model:
    def __init__(self, c, P):
        self.c = c
        self.P = P
        self.D, self.H = c["d_model"], c["n_heads"]
        self.Dh = self.D // self.H
        self.eps = c["norm_eps"]
        self.slopes = torch.tensor(alibi_slopes(self.H), dtype=torch.float64)

    def norm(self, kind, prefix, x):
        w = self.P[prefix + ".weight"]
        if kind == "layer":
            return F.layer_norm(x, (x.shape[-1],), w, self.P[prefix + ".bias"], self.eps)
        return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + self.eps) * w

    def linear(self, prefix, x):
        y = torch.matmul(x, self.P[prefix + ".weight"].t())
        b = self.P.get(prefix + ".bias")
        return y if b is None else y + b

    def rope(self, x):
        # Rotate-half: pairs (i, i + D/2), angle t·base^(-2i/D).
        T, D = x.shape[-2], x.shape[-1]
        half = D // 2
        theta = self.c["rope_base"] ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
        ang = torch.arange(T, dtype=torch.float64).view(T, 1) * theta.view(1, half)
        cos = torch.cat([ang.cos(), ang.cos()], dim=-1)
        sin = torch.cat([ang.sin(), ang.sin()], dim=-1)
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def attention(self, prefix, x):
        c = self.c
        B, T, D = x.shape
        H, Dh = self.H, self.Dh

        def heads(t):
            return t.reshape(B, T, H, Dh).transpose(1, 2)  # [B, H, T, Dh]

        q = heads(self.linear(prefix + ".wq", x))
        k = heads(self.linear(prefix + ".wk", x))
        v = heads(self.linear(prefix + ".wv", x))
        if c["qk_norm"]:
            q = self.norm(c["qk_norm_kind"], prefix + ".q_norm", q)
            k = self.norm(c["qk_norm_kind"], prefix + ".k_norm", k)
        if c["position"] == "rope":
            q, k = self.rope(q), self.rope(k)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh)  # [B, H, T, T]
        i = torch.arange(T).view(T, 1)
        j = torch.arange(T).view(1, T)
        visible = (j <= i).view(1, 1, T, T)
        if c["position"] == "alibi":
            s = s - self.slopes.view(1, H, 1, 1) * (i - j).abs().to(torch.float64).view(1, 1, T, T)
        neg_inf = torch.tensor(float("-inf"), dtype=torch.float64)
        variant = c["variant"]
        if variant == "softmax":
            # p_ij = exp(s_ij) / Σ_visible exp(s_ik), shifted by the (constant) row max.
            sm = torch.where(visible, s, neg_inf)
            m = sm.max(dim=-1, keepdim=True).values.detach()
            e = torch.exp(sm - m)
            p = e / e.sum(dim=-1, keepdim=True)
        elif variant == "softmax1":
            # p_ij = exp(s_ij) / (1 + Σ_visible exp(s_ik)); shift by max(row max, 0).
            sm = torch.where(visible, s, neg_inf)
            m = torch.clamp(sm.max(dim=-1, keepdim=True).values, min=0.0).detach()
            e = torch.exp(sm - m)
            p = e / (torch.exp(-m) + e.sum(dim=-1, keepdim=True))
        elif variant == "sigmoid":
            # p_ij = σ(s_ij + b), b = -ln(n), 0 where hidden.
            b = -math.log(c["seq_len"])
            p = torch.where(visible, torch.sigmoid(s + b), torch.zeros((), dtype=torch.float64))
        else:
            raise ValueError("unknown variant " + variant)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, D)
        return self.linear(prefix + ".wo", o)

    def mlp(self, prefix, x):
        if self.c["mlp"] == "gelu":
            return self.linear(prefix + ".fc2", F.gelu(self.linear(prefix + ".fc1", x), approximate="tanh"))
        return self.linear(prefix + ".fc2",
                           F.silu(self.linear(prefix + ".fc1", x)) * self.linear(prefix + ".gate", x))

    def block(self, l, x):
        c = self.c
        p = "blocks.%d." % l
        kind = c["norm"]
        g1 = self.P[p + "gamma1"] if c["layer_scale"] else 1.0
        g2 = self.P[p + "gamma2"] if c["layer_scale"] else 1.0

        def n(name, t):
            return self.norm(kind, p + name, t)

        attn = lambda t: self.attention(p + "attn", t)  # noqa: E731
        mlp = lambda t: self.mlp(p + "mlp", t)  # noqa: E731
        if c["placement"] == "pre":
            h = x + g1 * attn(n("norm1", x))
            return h + g2 * mlp(n("norm2", h))
        if c["placement"] == "post":
            h = n("norm1", x + g1 * attn(x))
            return n("norm2", h + g2 * mlp(h))
        if c["placement"] == "hybrid":
            h = x + g1 * n("post_norm1", attn(n("norm1", x)))
            return h + g2 * n("post_norm2", mlp(n("norm2", h)))
        raise ValueError("unknown placement " + c["placement"])

    def logits(self, ids):
        c = self.c
        T = ids.shape[1]
        x = self.P["tok_emb.weight"][ids]
        if c["position"] == "learned":
            x = x + self.P["pos_emb.weight"][:T]
        for l in range(c["n_layers"]):
            x = self.block(l, x)
        if c["placement"] != "post":
            x = self.norm(c["norm"], "final_norm", x)
        w = self.P["tok_emb.weight"] if c["tied_head"] else self.P["head.weight"]
        return torch.matmul(x, w.t())


def run_model(m, adamw):
    c = m["config"]
    given = {p["name"]: p for p in m["params"]}
    if len(given) != len(m["params"]):
        raise ValueError("duplicate parameter names")
    check_params(c, given)
    P = {n: load(p).requires_grad_(True) for n, p in given.items()}
    ids = load(m["ids"], torch.int64)
    targets = load(m["targets"], torch.int64)
    model = Model(c, P)

    names = [p["name"] for p in m["params"]]
    decay = [P[n] for n in names if given[n]["weight_decay"]]
    no_decay = [P[n] for n in names if not given[n]["weight_decay"]]
    groups = [{"params": decay, "weight_decay": adamw["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=adamw["lr"],
                            betas=tuple(adamw["betas"]), eps=adamw["eps"], amsgrad=False,
                            foreach=False)
    out = {"losses": []}
    for step in range(adamw["steps"]):
        opt.zero_grad(set_to_none=True)
        logits = model.logits(ids)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        out["losses"].append(loss.item())
        loss.backward()
        if step == 0:
            out["logits"] = dump(logits)
            out["loss"] = dump(loss)
            out["grads"] = {n: dump(P[n].grad) for n in names if P[n].grad is not None}
        opt.step()
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lm_parity_reference.py IN.json OUT.json")
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    device = cfg.get("device", "cpu")
    if device != "cpu":  # still float64: the reference for attnlab's CUDA f32 and bf16 runs
        if not torch.cuda.is_available():
            sys.exit("lm_parity_reference.py: device %s asked for, but torch %s sees no CUDA device"
                     % (device, torch.__version__))
        torch.set_default_device(device)

    results = {}
    for m in cfg["models"]:
        try:
            results[m["name"]] = run_model(m, cfg["adamw"])
        except Exception as e:  # reported per model; the C++ test fails that case
            results[m["name"]] = {"error": "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())}
    with open(sys.argv[2], "w") as f:
        # dumps, not dump: dump streams through the pure-Python encoder (~4x slower here).
        f.write(json.dumps({"torch_version": torch.__version__, "models": results}))


if __name__ == "__main__":
    main()
