#!/usr/bin/python3
"""The plots of a study's report (`attnlab report`, src/studies/report.h), from run directories only.

    report_plots.py --out DIR [--metric KEY=LABEL ...] --group NAME RUN_DIR [RUN_DIR ...] [--group ...]

A group is one grid point; its runs are its seeds. Writes into DIR:
  loss_curves.png    training and validation loss against step per group: the mean over the
                     group's runs, a band from their min to their max (steps all runs logged);
  final_metrics.png  per metric (summary.json's KEY), a bar per group: the mean over its runs,
                     error bars of ± the sample standard deviation (none for a single run);
  layer_stats.png    from each run's last {"stats": "val"} row of metrics.jsonl, per layer: the
                     kurtosis and ∞-norm of the block output (blocks.i) and the sink mass of its
                     attention (blocks.i.attn, mean over heads), the mean over the group's runs.
                     Left out (with a note) when no run logged statistics.
Each PNG is written to a temporary name and renamed, so no reader sees half a file. A missing or
malformed run file is an error naming it (exit 1). Needs Debian's python3-matplotlib.
"""
import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def fail(msg):
    print(f"report_plots.py: {msg}", file=sys.stderr)
    sys.exit(1)


def read_rows(run):
    path = os.path.join(run, "metrics.jsonl")
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail(f"cannot read '{path}': {e.strerror}")
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            fail(f"'{path}' line {i + 1} is not JSON")
    return rows


def read_summary(run):
    path = os.path.join(run, "summary.json")
    try:
        return json.load(open(path, encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        fail(f"cannot read '{path}': {e}")


def save(fig, out, name):
    path = os.path.join(out, name)
    tmp = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def curve(rows, key):
    """{step: value} of the rows that have `key` (not the statistics rows)."""
    return {r["step"]: r[key] for r in rows if key in r and "stats" not in r and isinstance(r[key], (int, float))}


def band(curves):
    """Steps every run has, and the mean, min and max over runs there."""
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    v = np.array([[c[s] for s in steps] for c in curves], dtype=float)
    return steps, v.mean(axis=0), v.min(axis=0), v.max(axis=0)


def plot_losses(groups, rows, out):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in zip(axes, ["loss", "val_loss"], ["training loss", "validation loss"]):
        for name, runs in groups:
            steps, mean, lo, hi = band([curve(rows[r], key) for r in runs])
            if not steps:
                continue
            (line,) = ax.plot(steps, mean, label=f"{name} (n={len(runs)})", marker="o" if key == "val_loss" else None, ms=3)
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("step")
        ax.set_title(f"{title}: mean over seeds, band min–max")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save(fig, out, "loss_curves.png")


def plot_finals(groups, summaries, metrics, out):
    cols = min(3, len(metrics))
    nrows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    names = [n for n, _ in groups]
    for i, (key, label) in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        means, errs = [], []
        for _, runs in groups:
            v = np.array([summaries[r][key] for r in runs if isinstance(summaries[r].get(key), (int, float))], dtype=float)
            means.append(v.mean() if v.size else np.nan)
            errs.append(v.std(ddof=1) if v.size > 1 else 0.0)
        ax.bar(range(len(names)), means, yerr=errs, capsize=4, color="C0", alpha=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for j in range(len(metrics), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("final metrics: mean over seeds, error bars ± std")
    save(fig, out, "final_metrics.png")


LAYER = re.compile(r"(?:^|\.)blocks\.(\d+)$")
LAYER_ATTN = re.compile(r"(?:^|\.)blocks\.(\d+)\.attn$")


def layer_stats(rows):
    """{"kurtosis"|"inf_norm"|"sink_mass": {layer: value}} of the last validation statistics row."""
    last = [r for r in rows if r.get("stats") == "val"]
    if not last:
        return None
    row, out = last[-1], {"kurtosis": {}, "inf_norm": {}, "sink_mass": {}}
    for path, a in row.get("activations", {}).items():
        if m := LAYER.search(path):
            out["kurtosis"][int(m.group(1))] = a["kurtosis"]
            out["inf_norm"][int(m.group(1))] = a["inf_norm"]
    for path, a in row.get("attention", {}).items():
        if (m := LAYER_ATTN.search(path)) and a.get("sink_mass"):
            out["sink_mass"][int(m.group(1))] = float(np.mean(a["sink_mass"]))
    return out


def plot_layers(groups, rows, out):
    stats = {r: layer_stats(rows[r]) for _, runs in groups for r in runs}
    if all(s is None for s in stats.values()):
        print("report_plots.py: no run logged validation statistics (stats.eval): no layer_stats.png", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    titles = {"kurtosis": "activation kurtosis (block output; Gaussian 3)", "inf_norm": "∞-norm (block output)",
              "sink_mass": "sink mass (mean over heads)"}
    for ax, key in zip(axes, titles):
        for name, runs in groups:
            per_run = [stats[r][key] for r in runs if stats[r] is not None and stats[r][key]]
            if not per_run:
                continue
            layers = sorted(set.intersection(*(set(s) for s in per_run)))
            mean = [np.mean([s[layer] for s in per_run]) for layer in layers]
            ax.plot(layers, mean, marker="o", label=f"{name} (n={len(per_run)})")
        ax.set_xlabel("layer")
        ax.set_title(titles[key], fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=7)
    fig.suptitle("inside the model at the last evaluation: mean over seeds")
    save(fig, out, "layer_stats.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the PNGs")
    ap.add_argument("--metric", action="append", default=[], help="KEY=LABEL: a summary.json number to plot")
    ap.add_argument("--group", action="append", nargs="+", required=True, metavar="NAME RUN_DIR",
                    help="a group's name, then its run directories")
    a = ap.parse_args()
    groups = []
    for g in a.group:
        if len(g) < 2:
            fail(f"--group {g[0]}: no run directories")
        groups.append((g[0], g[1:]))
    metrics = []
    for m in a.metric:
        key, sep, label = m.partition("=")
        if not sep or not key:
            fail(f"--metric '{m}': expected KEY=LABEL")
        metrics.append((key, label))
    runs = [r for _, rs in groups for r in rs]
    rows = {r: read_rows(r) for r in runs}
    summaries = {r: read_summary(r) for r in runs}
    os.makedirs(a.out, exist_ok=True)
    plot_losses(groups, rows, a.out)
    if metrics:
        plot_finals(groups, summaries, metrics, a.out)
    plot_layers(groups, rows, a.out)


if __name__ == "__main__":
    main()
