"""One table of finished audits: verdict, every check's decision, utility against the original, and the unlearning
method's seconds against the references' training seconds.

    python benchmarks/verdicts.py AUDIT_DIR [AUDIT_DIR ...] --json verdicts.json

Each AUDIT_DIR is an ``erasediff audit`` output folder (its results.json is read; nothing is recomputed). The
retrain seconds are read from the cached references' own records (``erasediff.json`` in their cache folders) when
they are still there. Columns: the forget task, the verdict, per membership attack the decision and the AUC
difference (unlearned minus the references' mean) under the conditioning its check decided on, the other checks'
decisions, retained accuracy drop (points), FD ratio to the original, unlearning seconds and their ratio to the
mean retrain seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusion.io import write_json

SHORT = {"PASS": "P", "FAIL": "F", "INCONCLUSIVE": "I"}


def task_name(results: dict) -> str:
    spec = results["forget_spec"]
    return f"class {','.join(map(str, spec['classes']))}" if spec["classes"] else f"{len(spec['sample_ids'])} images"


def retrain_seconds(results: dict) -> list[float]:
    """The training seconds each reference recorded in its cache folder (those still cached)."""
    seconds = []
    for role in results["membership"]["references"]:
        record = Path(results["models"][role]["source"]) / "erasediff.json"
        if record.is_file():
            seconds.append(json.loads(record.read_text()).get("seconds"))
    return [s for s in seconds if s is not None]


def row(results: dict) -> dict:
    checks = {c["name"]: c for c in results["checks"]}
    membership = {name.removeprefix("membership[").rstrip("]"): (SHORT[c["decision"]], c["estimate"])
                  for name, c in checks.items() if name.startswith("membership[")}
    others = {name: SHORT[c["decision"]] for name, c in checks.items() if not name.startswith("membership[")}
    original, unlearned = results["utility"]["original"], results["utility"]["unlearned"]
    seconds = (results.get("unlearning") or {}).get("seconds")
    retrain = retrain_seconds(results)
    mean_retrain = sum(retrain) / len(retrain) if retrain else None
    return {
        "task": task_name(results), "verdict": results["verdict"], "membership": membership, "checks": others,
        "retained_accuracy_drop": original["retained_accuracy"] - unlearned["retained_accuracy"],
        "fd_ratio": unlearned["retained_fd"] / original["retained_fd"],
        "unlearning_seconds": seconds, "retrain_seconds": retrain,
        "seconds_ratio_to_retrain": seconds / mean_retrain if seconds and mean_retrain else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audits", nargs="+", type=Path, help="audit output folders")
    parser.add_argument("--json", type=Path, default=Path("verdicts.json"))
    args = parser.parse_args()
    rows = [row(json.loads((folder / "results.json").read_text())) for folder in args.audits]
    for r in rows:
        mia = " ".join(f"{name}:{d}{estimate:+.2f}" for name, (d, estimate) in r["membership"].items())
        other = " ".join(f"{name}:{d}" for name, d in r["checks"].items())
        ratio = r["seconds_ratio_to_retrain"]
        drop = 100 * r["retained_accuracy_drop"]
        print(f"{r['task']:11s} {r['verdict']:12s} {mia} | {other} | ret.acc drop {drop:+.1f} pt, "
              f"FD x{r['fd_ratio']:.2f}, {r['unlearning_seconds'] or 0:.0f} s = "
              f"{'-' if ratio is None else f'{ratio:.2f}'} x retrain")
    write_json(args.json, {"benchmark": "verdicts", "audits": [str(a) for a in args.audits], "rows": rows})
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
