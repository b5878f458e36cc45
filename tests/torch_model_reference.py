"""Shared by the PyTorch references of the parity tests: lm_parity_reference.py (DecoderLM) and
vit_parity_reference.py (VisionTransformer) build their models on what is here, and
torch_parity_reference.py uses its tensor and file I/O.

Like the scripts, this is written from the maths and not from attnlab's code (it is the
reference): tensors as {"shape": [...], "data": [flat row-major list]}; the parameter-set check
(names, shapes, weight-decay flags); the transformer blocks in torch float64 -- layer norm
(F.layer_norm) or RMS norm (by hand), rotate-half RoPE, ALiBi with the paper's get_slopes,
softmax / softmax_1 / sigmoid attention written out explicitly (with or without a mask), GELU
(tanh) or SwiGLU MLP, pre- / post- / hybrid-norm blocks with optional LayerScale, the final
norm; the AdamW run (torch.optim.AdamW, two groups: weight decay on the flagged params only,
foreach=False) and the JSON driver:

    IN.json:  {"models": [{"name", "config", "params": [{"name", "weight_decay", "shape", "data"}, ...],
                           and the model's inputs}, ...],
               "adamw": {"lr", "betas", "eps", "weight_decay", "steps"},
               "device": "cpu" (default) or "cuda": where torch computes (always in float64)}
    OUT.json: {"torch_version": str,
               "models": {name: {"error": str} or
                                {"logits", "loss", "grads": {param name: tensor}, "losses": [...]}}}

A model (a subclass of Transformer) supplies expected_params(c), batch(m), logits(inputs),
loss(logits, targets) and its positions: rope(x), alibi_bias(T), visible(T), sigmoid_bias(T).
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


def read_input(script):
    """The parsed IN.json of `script IN.json OUT.json`; torch's default dtype set to float64."""
    if len(sys.argv) != 3:
        sys.exit("usage: %s IN.json OUT.json" % script)
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    torch.set_default_dtype(torch.float64)
    return cfg


def write_output(out):
    with open(sys.argv[2], "w") as f:
        # dumps, not dump: dump streams through the pure-Python encoder (~4x slower here).
        f.write(json.dumps(out))


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


def rope_rotate(x, pos, base):
    """Rotate-half RoPE of x [..., n, d] at positions pos [n]: pairs (i, i + d/2), angle
    pos·base^(-2i/d)."""
    d = x.shape[-1]
    half = d // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    ang = pos.view(-1, 1) * theta.view(1, -1)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


class ExpectedParams(dict):
    """name -> (shape, weight_decay): matrices of linear layers decay; embeddings, norms,
    biases and LayerScale do not."""

    def norm(self, name, dim, kind):
        self[name + ".weight"] = ([dim], False)
        if kind == "layer":
            self[name + ".bias"] = ([dim], False)

    def linear(self, name, n_in, n_out, bias):
        self[name + ".weight"] = ([n_out, n_in], True)
        if bias:
            self[name + ".bias"] = ([n_out], False)

    def blocks_and_final_norm(self, c):
        D = c["d_model"]
        Dh = D // c["n_heads"]
        for l in range(c["n_layers"]):
            p = "blocks.%d." % l
            if c["layer_scale"]:
                self[p + "gamma1"] = ([D], False)
                self[p + "gamma2"] = ([D], False)
            self.norm(p + "norm1", D, c["norm"])
            self.norm(p + "norm2", D, c["norm"])
            for w in ("wq", "wk", "wv", "wo"):
                self.linear(p + "attn." + w, D, D, True)
            if c["qk_norm"]:
                self.norm(p + "attn.q_norm", Dh, c["qk_norm_kind"])
                self.norm(p + "attn.k_norm", Dh, c["qk_norm_kind"])
            if c["variant"] == "sink":
                self[p + "attn.sink"] = ([c["n_heads"]], False)
            if c["variant"] == "sigmoid" and c.get("sigmoid_bias_mode", "fixed") == "learnable":
                self[p + "attn.sigmoid_bias"] = ([c["n_heads"]], False)
            if c.get("gated", False):
                self.linear(p + "attn.gate", D, c["n_heads"], True)
            if c["mlp"] == "gelu":
                self.linear(p + "mlp.fc1", D, 4 * D, True)
                self.linear(p + "mlp.fc2", 4 * D, D, True)
            else:
                h = swiglu_hidden(D)
                self.linear(p + "mlp.fc1", D, h, False)
                self.linear(p + "mlp.gate", D, h, False)
                self.linear(p + "mlp.fc2", h, D, False)
            if c["placement"] == "hybrid":
                self.norm(p + "post_norm1", D, c["norm"])
                self.norm(p + "post_norm2", D, c["norm"])
        if c["placement"] != "post":
            self.norm("final_norm", D, c["norm"])


def check_params(exp, given):
    """Raises unless `given` (name -> {"shape", "weight_decay", ...}) is exactly `exp`."""
    problems = ["missing " + n for n in sorted(set(exp) - set(given))]
    problems += ["unexpected " + n for n in sorted(set(given) - set(exp))]
    for n in sorted(set(exp) & set(given)):
        shape, decay = exp[n]
        if list(given[n]["shape"]) != shape:
            problems.append("%s has shape %s, expected %s" % (n, given[n]["shape"], shape))
        if bool(given[n]["weight_decay"]) != decay:
            problems.append("%s has weight_decay %s, expected %s" % (n, given[n]["weight_decay"], decay))
    if problems:
        raise ValueError("parameter set: " + "; ".join(problems))


def attention_weights(s, variant, visible, sigmoid_bias, sink=None, clip=(-0.025, 1.0)):
    """p from the scores s [B, H, T, T]; `visible` a bool mask broadcasting to s, or None (every
    key visible). sink: the per-head logits [H] of the sink variant; clip: clipped_softmax's
    (γ, ζ)."""
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64)
    sm = s if visible is None else torch.where(visible, s, neg_inf)
    if variant == "softmax":
        # p_ij = exp(s_ij) / Σ_visible exp(s_ik), shifted by the (constant) row max.
        m = sm.max(dim=-1, keepdim=True).values.detach()
        e = torch.exp(sm - m)
        return e / e.sum(dim=-1, keepdim=True)
    if variant == "softmax1":
        # p_ij = exp(s_ij) / (1 + Σ_visible exp(s_ik)); shift by max(row max, 0).
        m = torch.clamp(sm.max(dim=-1, keepdim=True).values, min=0.0).detach()
        e = torch.exp(sm - m)
        return e / (torch.exp(-m) + e.sum(dim=-1, keepdim=True))
    if variant == "sigmoid":
        # p_ij = σ(s_ij + b), 0 where hidden.
        p = torch.sigmoid(s + sigmoid_bias)
        return p if visible is None else torch.where(visible, p, torch.zeros((), dtype=torch.float64))
    if variant == "sink":
        # p_ij = exp(s_ij) / (exp(sink_h) + Σ_visible exp(s_ik)): torch's softmax over [s, sink_h],
        # the sink column dropped (its value is 0).
        col = sink.reshape(1, -1, 1, 1).expand(sm.shape[0], -1, sm.shape[2], 1)
        return torch.softmax(torch.cat([sm, col], dim=-1), dim=-1)[..., :-1]
    if variant == "clipped_softmax":
        # clip((ζ − γ)·softmax + γ, 0, 1), Qualcomm's form.
        gamma, zeta = clip
        return torch.clamp((zeta - gamma) * torch.softmax(sm, dim=-1) + gamma, 0.0, 1.0)
    raise ValueError("unknown variant " + variant)


class Transformer:
    """The parts both models share, on the parameters P (name -> tensor) by their dotted names."""

    def __init__(self, c, P):
        self.c, self.P = c, P
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

    def attention(self, prefix, x):
        c = self.c
        B, T, D = x.shape
        H, Dh = self.H, self.Dh

        def heads(t):
            return t.reshape(B, T, H, Dh).transpose(1, 2)  # [B, H, T, Dh]

        q, k, v = (heads(self.linear(prefix + w, x)) for w in (".wq", ".wk", ".wv"))
        if c["qk_norm"]:
            q = self.norm(c["qk_norm_kind"], prefix + ".q_norm", q)
            k = self.norm(c["qk_norm_kind"], prefix + ".k_norm", k)
        if c["position"] == "rope":
            q, k = self.rope(q), self.rope(k)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh)  # [B, H, T, T]
        if c["position"] == "alibi":
            s = s + self.alibi_bias(T)
        p = attention_weights(s, c["variant"], self.visible(T), self.sigmoid_bias_of(prefix, T),
                              self.P.get(prefix + ".sink"), (c.get("clip_gamma", -0.025), c.get("clip_zeta", 1.0)))
        o = torch.matmul(p, v)  # [B, H, T, Dh]
        if c.get("gated", False):  # each head times σ(gate(x)) per token
            o = o * torch.sigmoid(self.linear(prefix + ".gate", x)).transpose(1, 2).unsqueeze(-1)
        o = o.transpose(1, 2).reshape(B, T, D)
        return self.linear(prefix + ".wo", o)

    def sigmoid_bias_of(self, prefix, T):
        """b of sigmoid attention by c["sigmoid_bias_mode"]: fixed (the model's rule), learnable
        (the layer's parameter, one per head) or per_row (-ln of the keys each query row sees,
        counted from the mask; at least 1)."""
        mode = self.c.get("sigmoid_bias_mode", "fixed")
        if mode == "learnable":
            return self.P[prefix + ".sigmoid_bias"].reshape(1, self.H, 1, 1)
        if mode == "per_row":
            vis = self.visible(T)
            if vis is None:
                return -math.log(T)
            n = vis.sum(dim=-1, keepdim=True).clamp(min=1).to(torch.float64)  # [.., T, 1]
            return -torch.log(n)
        if mode != "fixed":
            raise ValueError("unknown sigmoid_bias_mode " + mode)
        return self.sigmoid_bias(T)

    def mlp(self, prefix, x):
        if self.c["mlp"] == "gelu":
            return self.linear(prefix + ".fc2", F.gelu(self.linear(prefix + ".fc1", x), approximate="tanh"))
        return self.linear(prefix + ".fc2",
                           F.silu(self.linear(prefix + ".fc1", x)) * self.linear(prefix + ".gate", x))

    def block(self, l, x):
        c = self.c
        p = "blocks.%d." % l
        g1 = self.P[p + "gamma1"] if c["layer_scale"] else 1.0
        g2 = self.P[p + "gamma2"] if c["layer_scale"] else 1.0

        def n(name, t):
            return self.norm(c["norm"], p + name, t)

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

    def blocks_and_final_norm(self, x):
        c = self.c
        for l in range(c["n_layers"]):
            x = self.block(l, x)
        if c["placement"] != "post":
            x = self.norm(c["norm"], "final_norm", x)
        return x


def run_model(m, adamw, model_class):
    """The logits, loss and gradients of model m, then the loss before each of `steps` AdamW steps."""
    c = m["config"]
    given = {p["name"]: p for p in m["params"]}
    if len(given) != len(m["params"]):
        raise ValueError("duplicate parameter names")
    check_params(model_class.expected_params(c), given)
    P = {n: load(p).requires_grad_(True) for n, p in given.items()}
    model = model_class(c, P)
    inputs, targets = model.batch(m)

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
        logits = model.logits(inputs)
        loss = model.loss(logits, targets)
        out["losses"].append(loss.item())
        loss.backward()
        if step == 0:
            out["logits"] = dump(logits)
            out["loss"] = dump(loss)
            out["grads"] = {n: dump(P[n].grad) for n in names if P[n].grad is not None}
        opt.step()
    return out


def main(script, model_class):
    """`script IN.json OUT.json`: every model of IN.json through run_model, into OUT.json."""
    cfg = read_input(script)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    device = cfg.get("device", "cpu")
    if device != "cpu":  # still float64: the reference for attnlab's CUDA f32 and bf16 runs
        if not torch.cuda.is_available():
            sys.exit("%s: device %s asked for, but torch %s sees no CUDA device"
                     % (script, device, torch.__version__))
        torch.set_default_device(device)

    results = {}
    for m in cfg["models"]:
        try:
            results[m["name"]] = run_model(m, cfg["adamw"], model_class)
        except Exception as e:  # reported per model; the C++ test fails that case
            results[m["name"]] = {"error": "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())}
    write_output({"torch_version": torch.__version__, "models": results})
