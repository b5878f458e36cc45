#!/usr/bin/env python3
"""The reference ViT recipe written the way a PyTorch user would write it, to compare attnlab's
training against on the same machine (CPU or GPU).

This is not the parity reference (tests/torch_model_reference.py mirrors attnlab's init and
optimizer exactly, to check gradients); this one uses PyTorch's defaults where attnlab makes a
choice of its own, so that a gap between the two points at the choice:

  * nn.Linear's default init (Kaiming-uniform, std 1/sqrt(3·fan_in)), cls token and positions
    N(0, 0.02);
  * AdamW on every parameter (torch's default: norms, biases and embeddings decay too);
  * no gradient clipping;
  * all 60,000 training images (no validation split) unless --val-size is given.

Flags switch each back to attnlab's choice, one at a time (--init-std, --clip, --val-size, …).

  /usr/bin/python3 experiments/vit-fmnist-variants/torch_reference.py --epochs 10 --variant softmax
"""
import argparse
import gzip
import math
import os
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(FMNIST, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(FMNIST, f"{prefix}-labels-idx1-ubyte.gz"))
    return x, y.long()


def augment(x, gen, max_shift, flip):
    """x: [B, 28, 28] uint8 -> same, flipped left-right with p 1/2, shifted up to max_shift px
    (zero fill: RandomCrop(28, padding=max_shift) with RandomHorizontalFlip)."""
    B, H, W = x.shape
    if flip:
        f = torch.rand(B, generator=gen) < 0.5
        x = torch.where(f[:, None, None], x.flip(-1), x)
    if max_shift:
        m = max_shift
        p = F.pad(x, (m, m, m, m))
        dx = torch.randint(0, 2 * m + 1, (B,), generator=gen)
        dy = torch.randint(0, 2 * m + 1, (B,), generator=gen)
        rows = (dy[:, None] + torch.arange(H)[None, :])  # [B, H]
        cols = (dx[:, None] + torch.arange(W)[None, :])  # [B, W]
        x = p[torch.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return x


class Attention(nn.Module):
    def __init__(self, d, heads, variant, n_tokens):
        super().__init__()
        self.h, self.dh, self.variant = heads, d // heads, variant
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.bias = -math.log(n_tokens)  # the sigmoid paper's b = -ln n

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
        if self.variant == "softmax":
            p = s.softmax(-1)
        elif self.variant == "sigmoid":
            p = torch.sigmoid(s + self.bias)
        elif self.variant == "softmax1":  # exp(s) / (1 + sum exp(s)), stably
            m = s.amax(-1, keepdim=True).clamp_min(0)
            e = torch.exp(s - m)
            p = e / (torch.exp(-m) + e.sum(-1, keepdim=True))
        else:
            raise ValueError(f"unknown variant {self.variant}")
        o = (p @ v).transpose(1, 2).reshape(B, T, D)
        return self.proj(o)


class Block(nn.Module):
    def __init__(self, d, heads, variant, n_tokens):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, variant, n_tokens)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class ViT(nn.Module):
    def __init__(self, a):
        super().__init__()
        n_patches = (28 // a.patch) ** 2
        self.patch, T = a.patch, n_patches + 1
        self.embed = nn.Linear(a.patch * a.patch, a.d)
        self.cls = nn.Parameter(torch.randn(a.d) * 0.02)
        self.pos = nn.Parameter(torch.randn(T, a.d) * 0.02)
        self.blocks = nn.ModuleList(Block(a.d, a.heads, a.variant, T) for _ in range(a.layers))
        self.norm = nn.LayerNorm(a.d)
        self.head = nn.Linear(a.d, 10)
        if a.init_std > 0:  # attnlab's choice: every matrix N(0, init_std), biases 0
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=a.init_std)
                    nn.init.zeros_(m.bias)

    def forward(self, x):  # x: [B, 28, 28] normalised
        B, p = x.shape[0], self.patch
        x = x.unfold(1, p, p).unfold(2, p, p).reshape(B, -1, p * p)  # row-major patches
        x = self.embed(x)
        x = torch.cat([self.cls.expand(B, 1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x)[:, 0])


def lr_at(step, total, warmup, lr):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * t))


def evaluate(model, x, y, mean, std):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = model((x[i:i + 1000].float() / 255 - mean) / std)
            loss += F.cross_entropy(logits, y[i:i + 1000], reduction="sum").item()
            correct += (logits.argmax(-1) == y[i:i + 1000]).sum().item()
    model.train()
    return correct / len(x), loss / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="softmax", choices=["softmax", "sigmoid", "softmax1"])
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps")
    ap.add_argument("--clip", type=float, default=0, help="gradient-norm clip (0: none)")
    ap.add_argument("--init-std", type=float, default=0, help="N(0, s) for every Linear (0: torch default)")
    ap.add_argument("--decay-all", type=int, default=1, help="1: decay every parameter; 0: matrices only")
    ap.add_argument("--val-size", type=int, default=0, help="hold out this many training images")
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpoint", default="", help="save here after every epoch; resume from it if it exists")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    x, y = load("train")
    xt, yt = load("test")
    if a.val_size:
        perm = torch.randperm(len(x), generator=gen)
        x, y = x[perm[a.val_size:]], y[perm[a.val_size:]]
    mean = x.float().mean().item() / 255
    std = x.float().std().item() / 255

    model = ViT(a)
    if a.decay_all:
        groups = [{"params": list(model.parameters()), "weight_decay": a.wd}]
    else:
        mats = [p for n, p in model.named_parameters() if p.dim() == 2 and n not in ("pos",)]
        rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n not in ("pos",))]
        groups = [{"params": mats, "weight_decay": a.wd}, {"params": rest, "weight_decay": 0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = len(x) // a.batch
    total = int(round(a.epochs * steps_per_epoch))
    warmup = max(1, int(round(a.warmup * total)))
    print(f"{a.variant}: {sum(p.numel() for p in model.parameters())} parameters, {len(x)} images, "
          f"{total} steps (warm-up {warmup})", flush=True)
    t0, step = time.time(), 0
    if a.checkpoint and os.path.exists(a.checkpoint):  # resume at the epoch boundary it was saved at
        ck = torch.load(a.checkpoint)
        same = lambda d: {k: v for k, v in d.items() if k != "threads"}  # noqa: E731
        if same(ck["args"]) != same(vars(a)):
            raise SystemExit(f"{a.checkpoint} was written with other arguments: {ck['args']}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step = ck["step"]
        print(f"resumed {a.checkpoint} at step {step}", flush=True)
    while step < total:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            if step == total:
                break
            idx = perm[i * a.batch:(i + 1) * a.batch]
            xb = augment(x[idx], gen, 2, True).float() / 255
            loss = F.cross_entropy(model((xb - mean) / std), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = nn.utils.clip_grad_norm_(model.parameters(), a.clip if a.clip > 0 else float("inf"))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, a.lr)
            opt.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total} loss {loss.item():.4f} grad_norm {gn:.2f} "
                      f"{step * a.batch / (time.time() - t0):.0f} img/s", flush=True)
            if step % steps_per_epoch == 0 or step == total:
                acc, tl = evaluate(model, xt, yt, mean, std)
                print(f"step {step}: test_acc {acc:.4f} test_loss {tl:.4f}", flush=True)
                if a.checkpoint:  # written whole, then renamed: a kill leaves the previous one
                    torch.save({"args": vars(a), "model": model.state_dict(), "opt": opt.state_dict(),
                                "gen": gen.get_state(), "step": step}, a.checkpoint + ".tmp")
                    os.replace(a.checkpoint + ".tmp", a.checkpoint)


if __name__ == "__main__":
    main()
