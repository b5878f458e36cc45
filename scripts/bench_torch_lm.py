#!/usr/bin/python3
"""Training tokens/s of the LM of `attnlab bench train` in PyTorch, for comparison (the same
model: RoPE, pre-LN, GELU MLP, tied head, AdamW; forward + backward + clip + optimizer step on
random tokens; default size d 128, 4 layers, 4 heads, T 128, batch 32, vocab 65).

    CPU (Debian's torch):  /usr/bin/python3 scripts/bench_torch_lm.py [--threads N]
    GPU:                   python3 scripts/bench_torch_lm.py --device cuda --bf16 --d-model 768 ...
Options: --steps N, --variant softmax|sigmoid|softmax1, --d-model, --layers, --heads, --seq,
--batch. On CUDA: --bf16 runs under torch.autocast(bfloat16) (f32 master weights, like
attnlab's run.precision=bf16); softmax goes through scaled_dot_product_attention (FlashAttention
or cuDNN), sigmoid and softmax1 are eager (torch has no fused kernel for them); --compile wraps
the model in torch.compile.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F


def rope(x, base=10000.0):
    T, D = x.shape[-2], x.shape[-1]
    half = D // 2
    inv = base ** (-torch.arange(0, half, dtype=torch.float32, device=x.device) * 2 / D)
    ang = torch.arange(T, dtype=torch.float32, device=x.device)[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, d, h, variant, T):
        super().__init__()
        self.h, self.variant, self.bias = h, variant, -math.log(T)
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def attn(self, x):
        B, T, D = x.shape
        heads = lambda t: t.view(B, T, self.h, D // self.h).transpose(1, 2)
        q, k, v = heads(self.wq(x)), heads(self.wk(x)), heads(self.wv(x))
        q, k = rope(q), rope(k)
        if self.variant == "softmax":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") \
                else self.composed(q, k, v)
        else:
            o = self.composed(q, k, v)
        return self.wo(o.transpose(1, 2).reshape(B, T, D))

    def composed(self, q, k, v):
        T = q.shape[-2]
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        if self.variant == "sigmoid":
            p = torch.sigmoid(s + self.bias).masked_fill(mask, 0.0)
        elif self.variant == "softmax1":
            s = torch.cat([s.masked_fill(mask, -math.inf), torch.zeros_like(s[..., :1])], -1)
            p = torch.softmax(s, -1)[..., :-1]
        else:
            p = torch.softmax(s.masked_fill(mask, -math.inf), -1)
        return p @ v

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x)), approximate="tanh"))


class LM(torch.nn.Module):
    def __init__(self, V, d, L, h, T, variant):
        super().__init__()
        self.emb = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList(Block(d, h, variant, T) for _ in range(L))
        self.norm = torch.nn.LayerNorm(d)

    def forward(self, x):
        h = self.emb(x)
        for b in self.blocks:
            h = b(h)
        return self.norm(h) @ self.emb.weight.t()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variant", default="softmax")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # attnlab's f32 GEMMs are true f32
    V, d, L, h, T, B = 65, a.d_model, a.layers, a.heads, a.seq, a.batch
    torch.manual_seed(0)
    model = LM(V, d, L, h, T, a.variant).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            **({"fused": True} if cuda else {}))
    step_model = torch.compile(model) if a.compile else model
    ids = torch.randint(0, V, (B, T + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rates = []
    for s in range(a.steps + 3):  # three warm-up steps (compilation, allocator, autotuning)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            logits = step_model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        if s >= 3:
            rates.append(B * T / (time.perf_counter() - t0))
    rates.sort()
    where = f"{a.device}{' bf16' if a.bf16 else ''}{' compiled' if a.compile else ''}"
    print(f"torch {torch.__version__} {where} threads {torch.get_num_threads()} variant {a.variant} "
          f"d {d} layers {L} heads {h} seq {T} batch {B}: "
          f"tokens/s median {rates[len(rates) // 2]:.0f}, best {rates[-1]:.0f} over {len(rates)} steps")


if __name__ == "__main__":
    main()
