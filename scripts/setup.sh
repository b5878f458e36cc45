#!/usr/bin/env bash
# Installs the Debian packages that attnlab's build, tests and main job need, when missing.
# Idempotent and quiet when everything is there. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config
  # libraries
  libeigen3-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  googletest libgtest-dev libopenmpi-dev openmpi-bin
  # fibers for the emulated CUDA device the gpu tests also run on (src/backend/cuda_emu/)
  libboost-context-dev
  # the checksum of checkpoints; gzip for the IDX image files
  libxxhash-dev zlib1g-dev
  # PyTorch parity tests (Debian's CPU PyTorch needs OpenBLAS's pthread build to be fast)
  python3 python3-numpy python3-torch libopenblas0-pthread
  # the plots of `attnlab report` (scripts/report_plots.py)
  python3-matplotlib
  # data: the KJV Bible text for the LM, Fashion-MNIST for the ViT
  bible-kjv dataset-fashion-mnist
  # speech: espeak-ng synthesises the corpus; libsndfile reads WAV/FLAC, libsamplerate
  # resamples, FFTW computes the log-mel features
  espeak-ng libsndfile1-dev libsamplerate0-dev libfftw3-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install packages" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
