#!/usr/bin/env python3
"""Static instruction mix of the flash-attention kernels, read from their SASS (no GPU needed).

For each forward / backward kernel of an object file: registers and stack (spills) per thread,
and the opcodes of its main loop (the longest backward branch: one key tile per warp in the
forward, one query tile in the backward) -- the tensor-core MMAs (HMMA), the special-function
unit's ops (MUFU: ex2, rcp), shared-memory fragment loads (LDSM), the FP32 arithmetic, shuffles,
local-memory traffic (spills) and the total. The loop's count includes every path through it
(the masked and ALiBi code too), so it bounds the work of a tile from above.

Why: on a GPU the loop is bound by whichever of these pipes saturates first; e.g. per warp
instruction, HMMA m16n8k16 keeps the tensor pipe busy for several cycles while a MUFU op takes
8 cycles of a sub-partition's 4-lane special-function unit. See kernels/NOTES.md.

Needs cuobjdump and nvdisasm (the CUDA toolkit's, or `pip install nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm`, whose bin/ folder this script finds by itself).

  scripts/sass_stats.py [OBJECT] [--arch sm_90a]
  (default OBJECT: build/src/CMakeFiles/attnlab_core.dir/backend/cuda/flash_attention.cu.o)
  scripts/sass_stats.py --fast-path [--arch sm_90a] [--source DIR]
  compiles src/backend/cuda/flash_attention.cu (from DIR, default the repository) with
  ATTNLAB_FLASH_FAST_PATH_ONLY, which removes the mask and ALiBi code from the loop: its counts
  are then exactly those of one full-mask tile (~15 s per architecture, nvcc on PATH).
"""
import argparse
import collections
import glob
import os
import re
import shutil
import site
import subprocess
import sys

DEFAULT_OBJECT = "build/src/CMakeFiles/attnlab_core.dir/backend/cuda/flash_attention.cu.o"
INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")


def tool_path():
    """PATH with a pip-installed CUDA bin/ appended when cuobjdump is not on it already."""
    path = os.environ.get("PATH", "")
    if shutil.which("cuobjdump") and shutil.which("nvdisasm"):
        return path
    roots = site.getsitepackages() + [site.getusersitepackages()]
    for root in roots:
        for b in glob.glob(os.path.join(root, "nvidia", "*", "bin")):
            if os.path.exists(os.path.join(b, "cuobjdump")):
                return path + os.pathsep + b
    sys.exit("sass_stats: cuobjdump / nvdisasm not found (CUDA toolkit, or pip install "
             "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


def cuobjdump(args, obj, env):
    r = subprocess.run(["cuobjdump", *args, obj], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("sass_stats: cuobjdump failed: " + r.stderr.strip())
    return r.stdout


def short_name(mangled):
    m = re.search(r"flash_(fwd|bwd)_kernel.*?(Softmax1|SigmoidFma|Sigmoid|Softmax)Policy.*?Li(\d+)", mangled)
    return "%s %s d%s" % (m.group(1), m.group(2).lower(), m.group(3)) if m else mangled


def resources(text):
    out = {}
    for name, usage in re.findall(r"Function (\S+):\n\s*(REG:.*)", text):
        out[name] = dict(re.findall(r"(\w+):(\d+)", usage))
    return out


def loop_mix(body):
    ins = [(int(a, 16), op, args) for a, op, args in INSTRUCTION.findall(body)]
    loops = []
    for addr, op, args in ins:
        target = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    if not loops:
        return None
    lo, hi = max(loops, key=lambda l: l[1] - l[0])
    ops = [op for a, op, _ in ins if lo <= a <= hi]
    mix = collections.Counter(op.split(".")[0] for op in ops)
    mufu = collections.Counter(op.split(".")[1] for op in ops if op.startswith("MUFU."))
    return len(ops), mix, mufu


def compile_fast_path(source_dir, arch, env):
    """The launchers' object built with ATTNLAB_FLASH_FAST_PATH_ONLY, in a temporary folder."""
    import tempfile
    out = os.path.join(tempfile.mkdtemp(prefix="sass-stats-"), "flash_fast_path.o")
    nvcc = shutil.which("nvcc", path=env["PATH"]) or "/usr/local/cuda/bin/nvcc"
    cmd = [nvcc, "-std=c++20", "-O3", "--expt-relaxed-constexpr", "-DATTNLAB_FLASH_FAST_PATH_ONLY",
           "-I" + os.path.join(source_dir, "src"), "-I" + source_dir,
           "--generate-code=arch=compute_%s,code=%s" % (arch[3:], arch), "-c",
           os.path.join(source_dir, "src/backend/cuda/flash_attention.cu"), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("sass_stats: nvcc failed:\n" + r.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("object", nargs="?", default=DEFAULT_OBJECT)
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--fast-path", action="store_true", help="count one full-mask tile exactly")
    ap.add_argument("--source", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                    help="repository whose kernel source --fast-path compiles")
    a = ap.parse_args()
    env = dict(os.environ, PATH=tool_path())
    if a.fast_path:
        a.object = compile_fast_path(os.path.abspath(a.source), a.arch, env)
    res = resources(cuobjdump(["-res-usage", "-arch", a.arch], a.object, env))
    sass = cuobjdump(["-sass", "-arch", a.arch], a.object, env)
    cols = ["HMMA", "LDSM", "FFMA", "FMUL", "FADD", "FMNMX", "SHFL", "F2FP", "LDL", "STL"]
    print("%s, main loop per warp (%s):" % (a.arch, "one full-mask tile" if a.fast_path else "all paths"))
    print("| kernel | regs | stack | loop instrs | MUFU ex2 | MUFU rcp | " + " | ".join(cols) + " |")
    print("|---" * (6 + len(cols)) + "|")
    rows = []
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name, body = chunk.split("\n", 1)
        name = name.strip()
        if "flash_fwd_kernel" not in name and "flash_bwd_kernel" not in name:
            continue
        mix = loop_mix(body)
        if not mix:
            continue
        n, ops, mufu = mix
        r = res.get(name, {})
        rows.append((short_name(name), "| %s | %s | %s | %d | %d | %d | %s |" % (
            short_name(name), r.get("REG", "?"), r.get("STACK", "?"), n, mufu["EX2"], mufu["RCP"],
            " | ".join(str(ops[c]) for c in cols))))
    for _, line in sorted(rows):
        print(line)


if __name__ == "__main__":
    main()
