#!/usr/bin/env python3
"""The speech recipe of configs/asr/reference.yaml written as a PyTorch user would, on the same
synthesised corpus (attnlab data asr), to check attnlab's CER against an independent
implementation on this machine.

Features (numpy, the maths of src/data/log_mel.h): 25 ms periodic-Hann frames every 10 ms, no
centre padding, |rfft|^2 at the next power of two, 80 HTK-mel triangles without area
normalisation, log(max(e, 1e-10)), mean/variance normalisation per utterance and bin.
Model: conv2d 3x3 stride 2 twice (144 channels, ReLU), Linear to 144, + sinusoidal positions,
6 pre-norm blocks (4 heads, GELU MLP 4x, dropout on each residual branch), final LayerNorm,
Linear head over blank + 28 characters, log-softmax, CTC (zero_infinity). AdamW 1.5e-3,
betas (0.9, 0.98), weight decay 0.01, batch 64 sorted by length (batches shuffled each epoch),
warm-up 10% then cosine to 0, clip 1.0, SpecAugment 2 freq masks <= 15 bins, 2 time masks <= 20
frames. Attention: softmax, sigmoid (sigma(s.qk + b), b = -ln 128) or softmax1.

  /usr/bin/python3 experiments/asr-variants/torch_reference.py --corpus data/asr-reference \
      --variant softmax --epochs 30 --checkpoint /tmp/asr-torch-softmax.pt

Resumable at epoch boundaries through --checkpoint. Prints per-epoch val CER and the final test
and test_long CER/WER as one JSON line.
"""
import argparse
import json
import math
import os
import time
import wave

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # ids 1.., 0 is the blank


def read_manifest(path):
    base = os.path.dirname(path)
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        if not os.path.isabs(r["path"]):
            r["path"] = os.path.join(base, r["path"])
    return rows


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        return x, w.getframerate()


def mel_filterbank(n_mels, n_fft, rate):
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    edges = hz(np.linspace(mel(0.0), mel(rate / 2.0), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    return fb


def log_mel(x, rate, n_mels=80):
    win, hop = int(round(0.025 * rate)), int(round(0.010 * rate))
    n_fft = 1 << (win - 1).bit_length()
    frames = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    spec = np.abs(np.fft.rfft(x[idx] * window, n=n_fft)) ** 2
    feats = np.log(np.maximum(spec @ mel_filterbank(n_mels, n_fft, rate).T, 1e-10))
    feats = (feats - feats.mean(0)) / np.sqrt(feats.var(0) + 1e-5)
    return feats.astype(np.float32)


def load_split(path):
    out = []
    for r in read_manifest(path):
        x, rate = read_wav(r["path"])
        labels = [VOCAB.index(ch) + 1 for ch in r["transcript"].upper()]
        out.append((torch.from_numpy(log_mel(x, rate)), torch.tensor(labels), r["transcript"].upper()))
    return out


def length_batches(data, batch):
    order = sorted(range(len(data)), key=lambda i: (data[i][0].shape[0], i))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def spec_augment(f, gen):
    f = f.clone()
    T, M = f.shape
    for _ in range(2):
        w = int(torch.randint(0, 16, (1,), generator=gen))
        s = int(torch.randint(0, max(1, M - w + 1), (1,), generator=gen))
        f[:, s:s + w] = 0
    for _ in range(2):
        w = min(int(torch.randint(0, 21, (1,), generator=gen)), T)
        s = int(torch.randint(0, max(1, T - w + 1), (1,), generator=gen))
        f[s:s + w, :] = 0
    return f


def collate(data, idx, gen=None):
    feats = [spec_augment(data[i][0], gen) if gen is not None else data[i][0] for i in idx]
    lengths = torch.tensor([f.shape[0] for f in feats])
    x = torch.zeros(len(idx), int(lengths.max()), feats[0].shape[1])
    for r, f in enumerate(feats):
        x[r, :f.shape[0]] = f
    targets = torch.cat([data[i][1] for i in idx])
    target_lengths = torch.tensor([len(data[i][1]) for i in idx])
    return x, lengths, targets, target_lengths, [data[i][2] for i in idx]


def sinusoidal(T, D):
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, D, 2, dtype=torch.float64) * (-math.log(10000.0) / D))
    pe = torch.zeros(T, D, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe.float()


class Attention(nn.Module):
    def __init__(self, d, heads, variant, bias):
        super().__init__()
        self.h, self.variant, self.bias = heads, variant, bias
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, key_valid):  # key_valid [B, T] bool
        B, T, D = x.shape
        q, k, v = (w(x).view(B, T, self.h, D // self.h).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        s = q @ k.transpose(-1, -2) / math.sqrt(D // self.h)
        mask = key_valid[:, None, None, :]
        if self.variant == "sigmoid":
            p = torch.sigmoid(s + self.bias) * mask
        else:
            s = s.masked_fill(~mask, float("-inf"))
            if self.variant == "softmax1":  # softmax with an extra zero logit
                m = torch.clamp(s.amax(-1, keepdim=True), min=0).detach()
                e = torch.exp(s - m)
                p = e / (torch.exp(-m) + e.sum(-1, keepdim=True))
            else:
                p = torch.softmax(s, -1)
        return self.wo((p @ v).transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, d, heads, variant, bias, dropout):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, variant, bias)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_valid):
        x = x + self.drop(self.attn(self.n1(x), key_valid))
        return x + self.drop(self.mlp(self.n2(x)))


def sub_len(n):
    n = (n - 3) // 2 + 1
    return (n - 3) // 2 + 1


class Recognizer(nn.Module):
    def __init__(self, variant, n_mels=80, channels=144, d=144, layers=6, heads=4, dropout=0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, 2)
        self.conv2 = nn.Conv2d(channels, channels, 3, 2)
        self.proj = nn.Linear(channels * sub_len(n_mels), d)
        self.blocks = nn.ModuleList(Block(d, heads, variant, -math.log(128.0), dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, len(VOCAB) + 1)

    def forward(self, x, lengths):
        x = F.relu(self.conv2(F.relu(self.conv1(x[:, None]))))  # [B, C, T', F']
        B, C, T, Fp = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(B, T, C * Fp))
        x = x + sinusoidal(T, x.shape[-1])
        out_len = sub_len(lengths)
        key_valid = torch.arange(T)[None, :] < out_len[:, None]
        for b in self.blocks:
            x = b(x, key_valid)
        return F.log_softmax(self.head(self.norm(x)), -1), out_len


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score(model, data, batch):
    model.eval()
    loss_sum, chars, char_edits, words, word_edits = 0.0, 0, 0, 0, 0
    with torch.no_grad():
        for idx in length_batches(data, batch):
            x, lengths, targets, tl, refs = collate(data, idx)
            lp, out_len = model(x, lengths)
            loss = F.ctc_loss(lp.transpose(0, 1), targets, out_len, tl, zero_infinity=True)
            loss_sum += float(loss) * len(idx)
            best = lp.argmax(-1)
            for r, ref in enumerate(refs):
                ids = best[r, :out_len[r]].tolist()
                hyp = "".join(VOCAB[i - 1] for k, i in enumerate(ids) if i != 0 and (k == 0 or ids[k - 1] != i))
                char_edits += edit_distance(hyp, ref)
                chars += len(ref)
                word_edits += edit_distance(hyp.split(), ref.split())
                words += len(ref.split())
    model.train()
    return {"loss": loss_sum / len(data), "cer": char_edits / chars, "wer": word_edits / words}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--variant", default="softmax", choices=["softmax", "sigmoid", "softmax1"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()
    splits = {s: load_split(os.path.join(a.corpus, s + ".jsonl"))
              for s in ("train", "val", "test", "test_long") if os.path.exists(os.path.join(a.corpus, s + ".jsonl"))}
    print(f"features: {time.time() - t0:.0f} s", flush=True)
    model = Recognizer(a.variant)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    batches = length_batches(splits["train"], a.batch)
    total = a.epochs * len(batches)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    gen = torch.Generator().manual_seed(a.seed)
    epoch = 0
    if a.checkpoint and os.path.exists(a.checkpoint):
        ck = torch.load(a.checkpoint)
        model.load_state_dict(ck["model"]), opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["rng"])
        epoch = ck["epoch"]
        print(f"resumed at epoch {epoch}", flush=True)
    frames = sum(int(f.shape[0]) for f, _, _ in splits["train"])
    for epoch in range(epoch, a.epochs):
        t = time.time()
        for bi in torch.randperm(len(batches), generator=gen).tolist():
            x, lengths, targets, tl, _ = collate(splits["train"], batches[bi], gen)
            lp, out_len = model(x, lengths)
            loss = F.ctc_loss(lp.transpose(0, 1), targets, out_len, tl, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        v = score(model, splits["val"], a.batch)
        print(f"epoch {epoch + 1}: loss {float(loss):.3f} val CER {100 * v['cer']:.2f}% "
              f"({frames / (time.time() - t):.0f} frames/s)", flush=True)
        if a.checkpoint:
            tmp = a.checkpoint + ".tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "rng": torch.get_rng_state(), "epoch": epoch + 1}, tmp)
            os.replace(tmp, a.checkpoint)
    result = {"variant": a.variant}
    for s in ("test", "test_long"):
        if s in splits:
            r = score(model, splits[s], a.batch)
            result.update({f"{s}_cer": r["cer"], f"{s}_wer": r["wer"], f"{s}_loss": r["loss"]})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
