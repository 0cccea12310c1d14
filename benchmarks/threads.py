"""The default audit's wall time with 1 and 2 torch threads, alone and beside a second job, in one run.

    python benchmarks/threads.py --json benchmarks/results/threads.json [--threads 1,2] [--timeout 900]

For each thread count: the default audit alone, then two default audits started together (the second job is the
same audit with the same thread count: what two users of one machine, or two references filled at once, do).
Every audit reuses one warm cache (the default reference, its references and the judge must be cached: run the
default audit once first), so the times are the audit's own work. A run that exceeds ``--timeout`` seconds is
stopped and reported as such. The environment block records the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffusion.environment import environment_info
from diffusion.io import write_json

REPO = Path(__file__).resolve().parents[1]


def audits(threads: int, copies: int, work: Path, timeout: float) -> list[float | None]:
    """Start ``copies`` default audits with ``threads`` threads at once; the wall seconds of each (None: stopped
    at ``timeout``)."""
    started = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, "-m", "erasediff", "audit", "--threads", str(threads), "--quiet",
                              "--force", "--out", str(work / f"audit-{threads}-{copies}-{k}")],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for k in range(copies)]
    seconds: list[float | None] = [None] * copies
    while any(run.poll() is None for run in runs) and time.perf_counter() - started < timeout:
        for k, run in enumerate(runs):
            if run.poll() is not None and seconds[k] is None:
                seconds[k] = time.perf_counter() - started
        time.sleep(1.0)
    for k, run in enumerate(runs):
        if run.poll() is None:
            run.kill()
        elif seconds[k] is None:
            seconds[k] = time.perf_counter() - started
        if run.wait() not in (0, 1, 4) and seconds[k] is not None:
            raise SystemExit(f"audit with {threads} thread(s) failed: {run.stderr.read().strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run is stopped")
    parser.add_argument("--json", type=Path, default=Path("threads.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="erasediff-threads-"))
    rows = []
    print(f"{'threads':>7} {'jobs':>4}  wall seconds of each audit", flush=True)
    for threads in (int(t) for t in args.threads.split(",")):
        for copies in (1, 2):
            seconds = audits(threads, copies, work, args.timeout)
            rows.append({"threads": threads, "jobs": copies, "seconds": seconds})
            cells = "  ".join(f"{s:7.1f}" if s is not None else f">{args.timeout:.0f} (stopped)" for s in seconds)
            print(f"{threads:7d} {copies:4d}  {cells}", flush=True)
    write_json(args.json, {"benchmark": "threads", "cores": os.cpu_count(), "environment": environment_info(),
                           "timeout": args.timeout, "rows": rows})
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
