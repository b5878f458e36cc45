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
     "adamw": {"lr", "betas", "eps", "weight_decay", "steps"}}

For every model this script builds the ViT in torch float64 from the given weights, by their
dotted names, written from the maths and not from attnlab's code: the patch embedding is a
Conv2d (stride = kernel = patch size) whose weight is the Linear's reshaped to [D, C, p, p]; an
optional class token; positions: a learned [T, D] table, the 2-D sinusoidal table (first half of
the channels the 1-D table of the patch row, second half of its column, class token zeros),
2-D axial RoPE (first half of each head's dims rotated by the row, second half by the column,
rotate-half layout; class token not rotated) or 2-D ALiBi (-slope * Euclidean distance between
patch centres, 0 for the class token); bidirectional softmax / softmax_1 / sigmoid attention
written out; pre / post / hybrid blocks with optional LayerScale; final norm (not post), class
token or mean pooling, a Linear head; the loss is F.cross_entropy(label_smoothing=eps).
It checks the parameter names, shapes and weight-decay flags, computes the logits, the loss and
every gradient, then runs `steps` steps of torch.optim.AdamW, recording the loss before each.

OUT.json: {"torch_version": str,
           "models": {name: {"error": str} or {"logits", "loss", "grads", "losses"}}}
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


def grid(c):
    rows, cols = c["image_height"] // c["patch_size"], c["image_width"] // c["patch_size"]
    prefix = 1 if c["pooling"] == "cls" else 0
    return rows, cols, prefix


def expected_params(c):
    D, H = c["d_model"], c["n_heads"]
    Dh = D // H
    rows, cols, prefix = grid(c)
    T = prefix + rows * cols
    e = {}

    def norm(name, dim, kind):
        e[name + ".weight"] = ([dim], False)
        if kind == "layer":
            e[name + ".bias"] = ([dim], False)

    def linear(name, n_in, n_out, bias):
        e[name + ".weight"] = ([n_out, n_in], True)
        if bias:
            e[name + ".bias"] = ([n_out], False)

    linear("patch_embed", c["channels"] * c["patch_size"] ** 2, D, True)
    if prefix:
        e["cls_token"] = ([D], False)
    if c["position"] == "learned":
        e["pos_emb"] = ([T, D], False)
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
            h = int(math.ceil(8 * D / 3 / 8)) * 8
            linear(p + "mlp.fc1", D, h, False)
            linear(p + "mlp.gate", D, h, False)
            linear(p + "mlp.fc2", h, D, False)
        if c["placement"] == "hybrid":
            norm(p + "post_norm1", D, c["norm"])
            norm(p + "post_norm2", D, c["norm"])
    if c["placement"] != "post":
        norm("final_norm", D, c["norm"])
    linear("head", D, c["n_classes"], True)
    return e


def check_params(c, given):
    exp = expected_params(c)
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


def sincos_1d(positions, d):
    """[n, d]: sin(pos * w_i) at column 2i, cos at 2i + 1, w_i = 10000^(-2i/d)."""
    i = torch.arange(d // 2, dtype=torch.float64)
    w = 10000.0 ** (-2.0 * i / d)
    ang = positions.view(-1, 1) * w.view(1, -1)
    return torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(len(positions), d)


def rope_rotate(x, pos, base):
    """Rotate-half RoPE of x [..., n, d] at integer positions pos [n]."""
    d = x.shape[-1]
    half = d // 2
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    ang = pos.view(-1, 1) * theta.view(1, -1)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class Model:
    def __init__(self, c, P):
        self.c, self.P = c, P
        self.D, self.H = c["d_model"], c["n_heads"]
        self.Dh = self.D // self.H
        self.eps = c["norm_eps"]
        self.rows, self.cols, self.prefix = grid(c)
        self.T = self.prefix + self.rows * self.cols
        n = self.rows * self.cols
        self.patch_row = torch.arange(n, dtype=torch.float64).div(self.cols, rounding_mode="floor")
        self.patch_col = torch.arange(n, dtype=torch.float64).remainder(self.cols)

    def norm(self, kind, prefix, x):
        w = self.P[prefix + ".weight"]
        if kind == "layer":
            return F.layer_norm(x, (x.shape[-1],), w, self.P[prefix + ".bias"], self.eps)
        return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + self.eps) * w

    def linear(self, prefix, x):
        y = torch.matmul(x, self.P[prefix + ".weight"].t())
        b = self.P.get(prefix + ".bias")
        return y if b is None else y + b

    def sinusoidal_2d(self):
        half = self.D // 2
        pe = torch.cat([sincos_1d(self.patch_row, half), sincos_1d(self.patch_col, half)], dim=-1)
        return torch.cat([torch.zeros(self.prefix, self.D), pe], dim=0)

    def alibi_2d(self):
        dr = self.patch_row.view(-1, 1) - self.patch_row.view(1, -1)
        dc = self.patch_col.view(-1, 1) - self.patch_col.view(1, -1)
        dist = torch.zeros(self.T, self.T)
        dist[self.prefix:, self.prefix:] = torch.sqrt(dr ** 2 + dc ** 2)
        slopes = torch.tensor(alibi_slopes(self.H), dtype=torch.float64)
        return -slopes.view(-1, 1, 1) * dist  # [H, T, T]

    def rope_2d(self, x):
        base, p, h = self.c["rope_base"], self.prefix, self.Dh // 2
        patches = x[..., p:, :]
        rotated = torch.cat([rope_rotate(patches[..., :h], self.patch_row, base),
                             rope_rotate(patches[..., h:], self.patch_col, base)], dim=-1)
        return torch.cat([x[..., :p, :], rotated], dim=-2)

    def attention(self, prefix, x):
        c = self.c
        B, T, D = x.shape
        H, Dh = self.H, self.Dh

        def heads(t):
            return t.reshape(B, T, H, Dh).transpose(1, 2)

        q, k, v = (heads(self.linear(prefix + w, x)) for w in (".wq", ".wk", ".wv"))
        if c["qk_norm"]:
            q = self.norm(c["qk_norm_kind"], prefix + ".q_norm", q)
            k = self.norm(c["qk_norm_kind"], prefix + ".k_norm", k)
        if c["position"] == "rope":
            q, k = self.rope_2d(q), self.rope_2d(k)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh)  # [B, H, T, T], no mask
        if c["position"] == "alibi":
            s = s + self.alibi_2d()
        variant = c["variant"]
        if variant == "softmax":
            e = torch.exp(s - s.max(dim=-1, keepdim=True).values.detach())
            p = e / e.sum(dim=-1, keepdim=True)
        elif variant == "softmax1":
            m = torch.clamp(s.max(dim=-1, keepdim=True).values, min=0.0).detach()
            e = torch.exp(s - m)
            p = e / (torch.exp(-m) + e.sum(dim=-1, keepdim=True))
        elif variant == "sigmoid":
            p = torch.sigmoid(s - math.log(T))  # b = -ln(tokens)
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
        for l in range(c["n_layers"]):
            x = self.block(l, x)
        if c["placement"] != "post":
            x = self.norm(c["norm"], "final_norm", x)
        x = x[:, 0] if self.prefix else x.mean(dim=1)
        return self.linear("head", x)


def run_model(m, adamw):
    c = m["config"]
    given = {p["name"]: p for p in m["params"]}
    if len(given) != len(m["params"]):
        raise ValueError("duplicate parameter names")
    check_params(c, given)
    P = {n: load(p).requires_grad_(True) for n, p in given.items()}
    images = load(m["images"])
    labels = load(m["labels"], torch.int64)
    model = Model(c, P)
    names = [p["name"] for p in m["params"]]
    groups = [{"params": [P[n] for n in names if given[n]["weight_decay"]], "weight_decay": adamw["weight_decay"]},
              {"params": [P[n] for n in names if not given[n]["weight_decay"]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=adamw["lr"], betas=tuple(adamw["betas"]),
                            eps=adamw["eps"], amsgrad=False, foreach=False)
    out = {"losses": []}
    for step in range(adamw["steps"]):
        opt.zero_grad(set_to_none=True)
        logits = model.logits(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=c["label_smoothing"])
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
        sys.exit("usage: vit_parity_reference.py IN.json OUT.json")
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    results = {}
    for m in cfg["models"]:
        try:
            results[m["name"]] = run_model(m, cfg["adamw"])
        except Exception as e:  # reported per model; the C++ test fails that case
            results[m["name"]] = {"error": "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc())}
    with open(sys.argv[2], "w") as f:
        f.write(json.dumps({"torch_version": torch.__version__, "models": results}))


if __name__ == "__main__":
    main()
