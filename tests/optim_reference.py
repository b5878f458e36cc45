#!/usr/bin/python3
"""PyTorch reference for tests/test_optim.cpp (AdamW parity).

Run with Debian's /usr/bin/python3 (python3-torch):

    optim_reference.py IN.json OUT.json

IN.json (written by the C++ test):
    {"betas": [b1, b2], "eps": e, "weight_decay": wd,
     "lr": [lr per step],
     "params": [{"name": str, "weight_decay": bool, "shape": [...], "data": [...]}, ...],
     "grads": [[{"shape", "data"} or null per param] per step]}

Builds torch.optim.AdamW in float64 with two param groups (the params whose weight_decay flag
is set get weight_decay=wd, the others 0), and before each step sets every group's lr to that
step's lr and each param's .grad (None where the grad is null, so that param is skipped).
Writes OUT.json: {"torch_version": str, "params": [[{"shape", "data"} per param] per step]}.
"""
import json
import sys

import torch


def load(t):
    return torch.tensor(t["data"], dtype=torch.float64).reshape(t["shape"])


def dump(t):
    t = t.detach().contiguous()
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: optim_reference.py IN.json OUT.json")
    with open(sys.argv[1]) as f:
        cfg = json.load(f)

    params = [load(p).requires_grad_(True) for p in cfg["params"]]
    decay = [p for p, spec in zip(params, cfg["params"]) if spec["weight_decay"]]
    no_decay = [p for p, spec in zip(params, cfg["params"]) if not spec["weight_decay"]]
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg["lr"][0],
                            betas=tuple(cfg["betas"]), eps=cfg["eps"], amsgrad=False,
                            foreach=False)

    history = []
    for lr, grads in zip(cfg["lr"], cfg["grads"]):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = None if g is None else load(g)
        opt.step()
        history.append([dump(p) for p in params])

    with open(sys.argv[2], "w") as f:
        json.dump({"torch_version": torch.__version__, "params": history}, f)


if __name__ == "__main__":
    main()
