"""Reference log-mel features in float64 numpy, for tests/test_speech_features.cpp.

Usage: log_mel_reference.py in.json out.json

in.json:  {"cases": [{"wav": path} or {"f32": path of raw little-endian float32 samples},
                     with "sample_rate", "window_ms", "hop_ms", "n_fft", "n_mels", "f_min",
                     "f_max"], "filterbanks": [{"sample_rate", "n_fft", "n_mels", "f_min",
                     "f_max"}]}
out.json: {"cases": [{"frames", "n_mels", "log_mel" (row-major [frames, n_mels]),
                      "energy" (the same before the log)}],
           "filterbanks": [{"fb" (row-major [n_mels, n_fft / 2 + 1])}]}

The definition is the one in src/data/log_mel.h, written again from the maths: frames of win
samples without centre padding, periodic Hann window, rfft zero-padded to n_fft, |X|^2, HTK
triangles without area normalisation (torchaudio's melscale_fbanks(norm=None,
mel_scale="htk")), ln(max(E, 1e-10)). WAVs are read with the wave module; 16-bit samples are
scaled by 1/32768 (what libsndfile's sf_readf_float does).
"""
import json
import math
import sys
import wave

import numpy as np


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit mono, got {w.getnchannels()} channels "
                             f"of {8 * w.getsampwidth()} bits")
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0, rate


def samples_of(ms, sample_rate):
    return int(math.floor(ms * sample_rate / 1000.0 + 0.5))


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def filterbank(sample_rate, n_fft, n_mels, f_min, f_max):
    """[n_mels, n_fft // 2 + 1]: each filter the lesser of its rising and falling slopes."""
    freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    left, peak, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - left) / (peak - left)
    falling = (right - freqs[None, :]) / (right - peak)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(x, c):
    sr = c["sample_rate"]
    win, hop = samples_of(c["window_ms"], sr), samples_of(c["hop_ms"], sr)
    frames = 0 if len(x) < win else 1 + (len(x) - win) // hop
    index = np.arange(win)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    spectrum = np.fft.rfft(x[index] * window[None, :], n=c["n_fft"], axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    fb = filterbank(sr, c["n_fft"], c["n_mels"], c["f_min"], c["f_max"])
    energy = power @ fb.T
    return frames, energy, np.log(np.maximum(energy, 1e-10))


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    out = {"cases": [], "filterbanks": []}
    for c in spec.get("cases", []):
        if "wav" in c:
            x, rate = read_wav(c["wav"])
            if rate != c["sample_rate"]:
                raise SystemExit(f"{c['wav']}: rate {rate}, the case says {c['sample_rate']}")
        else:
            x = np.fromfile(c["f32"], dtype="<f4").astype(np.float64)
        frames, energy, lm = log_mel(x, c)
        out["cases"].append({"frames": int(frames), "n_mels": c["n_mels"],
                             "energy": energy.ravel().tolist(), "log_mel": lm.ravel().tolist()})
    for c in spec.get("filterbanks", []):
        fb = filterbank(c["sample_rate"], c["n_fft"], c["n_mels"], c["f_min"], c["f_max"])
        out["filterbanks"].append({"fb": fb.ravel().tolist()})
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
