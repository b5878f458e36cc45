#!/usr/bin/env bash
# Do softmax_1, a learnable sink, clipped softmax and gated attention remove the activation
# outliers of softmax, and with them the W8A8 loss? Trains every variant on one config (same data,
# model, optimizer and seed), then evaluates each final checkpoint in full precision and
# fake-quantised, and prints one table: quality, kurtosis, max ∞-norm, sink and row mass, W8A8.
#
#   experiments/outliers/run.sh                                   # the small ViT (minutes a variant)
#   CONFIG=configs/vit/fmnist.yaml experiments/outliers/run.sh    # the reference ViT (~1 h a variant)
#   CONFIG=configs/lm/kjv-char.yaml experiments/outliers/run.sh   # the KJV LM
#   VARIANTS="softmax sink" SEEDS="1 2" QUANT=w8a16 SET="--set train.steps=500" ...
#
# A finished run is kept, an interrupted one resumed; the evaluations are redone (they are cheap).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTNLAB_BIN:-build/src/attnlab}
source experiments/lib.sh
CONFIG=${CONFIG:-configs/vit/fmnist-small.yaml}
VARIANTS=${VARIANTS:-softmax softmax1 sink clipped_softmax gated sigmoid}
SEEDS=${SEEDS:-1}
QUANT=${QUANT:-w8a8}
NAME=$(basename "$CONFIG" .yaml)
RUNS_DIR=${RUNS_DIR:-runs/outliers}
read -r -a extra <<< "${SET:-}"
mkdir -p "$RUNS_DIR"
dirs=()
for seed in $SEEDS; do
  for variant in $VARIANTS; do
    dir="$RUNS_DIR/$NAME-$variant-s$seed"
    dirs+=("$dir")
    train_or_resume "$dir" "$variant (seed $seed, $CONFIG)" --config "$CONFIG" --set attention.variant="$variant" \
      --set run.seed="$seed" --set run.dir="$dir" "${extra[@]}"
    echo "== $variant (seed $seed): $QUANT evaluation"
    "$BIN" eval "$dir" --quant "$QUANT" > "$dir.$QUANT.json"
  done
done
echo
echo "## Inside the model: $CONFIG ($QUANT)"
echo
python3 - "$QUANT" "${dirs[@]}" <<'PY' | tee "$RUNS_DIR/outliers-$NAME.md"
import json, sys
quant, dirs = sys.argv[1], sys.argv[2:]
summaries = [json.load(open(f"{d}/summary.json")) for d in dirs]
several_seeds = len({s["seed"] for s in summaries}) > 1
rows = []
for d, s in zip(dirs, summaries):
    e = json.load(open(f"{d}.{quant}.json"))
    fp, q = e["quant"]["full_precision"], e["quant"]["quantised"]
    metric = "val_acc" if "val_acc" in fp else "val_bpc" if "val_bpc" in fp else "val_loss"
    st = e["stats"]["summary"]
    label = s["variant"] + (f" (seed {s['seed']})" if several_seeds else "")
    rows.append((label, metric, fp[metric], q[metric], st["max_kurtosis"], st["max_inf_norm"],
                 st.get("sink_mass", float("nan")), st.get("row_mass", float("nan"))))
print(f"| variant | {rows[0][1]} | {quant} | change | max kurtosis (Gaussian 3) | max ∞-norm | sink mass | row mass |")
print("|---|---|---|---|---|---|---|---|")
for v, m, a, b, k, n, sink, mass in rows:
    print(f"| {v} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {k:.3g} | {n:.3g} | {sink:.3f} | {mass:.3f} |")
PY
