"""The GPU check: the test suite, the default audit and the unlearning benchmark's EraseDiff / SalUn / SA rows on a
CUDA device, one prepared run with the timings printed and written as JSON.

    python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json [--budget 600]

Each step runs as its own process (the same commands a user types) with a fresh cache under the output's folder,
so the audit's time includes training its reference and references on the GPU. Steps that would start after
``--budget`` seconds are skipped and listed as such. Everything runs in float32: the project's code has no
autocast, so the GPU numbers are comparable with the CPU ones in benchmarks/results/.
Exits 2 with one line when no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusion.environment import environment_info
from diffusion.io import write_json

REPO = Path(__file__).resolve().parents[1]


def steps(work: Path) -> list[tuple[str, list[str]]]:
    """(name, command) of each step, in order."""
    python = sys.executable
    return [
        ("tests", [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]),
        ("default audit", [python, "-m", "erasediff", "audit", "--out", str(work / "audit"), "--quiet"]),
        ("unlearning benchmark (class 0)", [python, "benchmarks/unlearning.py", "--forget-class", "0", "--quiet",
                                            "--methods", "erasediff,salun,selective_amnesia",
                                            "--json", str(work / "unlearning.json")]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget", type=float, default=540.0, help="seconds after which no step starts")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device is visible; the GPU check needs one (nothing was run)", file=sys.stderr)
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="erasediff-gpu-check-"))
    env = {**os.environ, "ERASEDIFF_CACHE": str(work / "cache")}
    started, rows = time.perf_counter(), []
    for name, command in steps(work):
        if time.perf_counter() - started > args.budget:
            rows.append({"step": name, "status": "skipped (budget)", "seconds": None})
            continue
        begin = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
        rows.append({"step": name, "status": f"exit {done.returncode}", "seconds": time.perf_counter() - begin,
                     "tail": (done.stdout + done.stderr)[-2000:]})
        print(f"{name:34s} {rows[-1]['status']:18s} {rows[-1]['seconds']:8.1f} s", flush=True)
    write_json(args.json, {"benchmark": "gpu_check", "environment": environment_info(),
                           "device": torch.cuda.get_device_name(0), "rows": rows,
                           "total_seconds": time.perf_counter() - started})
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
