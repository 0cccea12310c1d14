"""Variants of an unlearning method under the audit's membership comparison, side by side in one run.

    python benchmarks/unlearning_membership.py --forget-class 0 \
        --variants '[{}, {"inner_steps": 2}, {"barrier": "value", "inner_steps": 2, "eta": 1.0}]'
    python benchmarks/unlearning_membership.py --forget-samples 50 --variants '[{}, {"forget_target": "match"}]'

Loads what the default audit uses (the built-in reference, its K retrained references, the judge; trained and
cached when missing), fits the audit's attacks on its calibration split against the original, then per variant
(method parameters as JSON; "method" picks another registered method) unlearns, and prints: seconds, judged
accuracy on the forgotten classes, retained accuracy and FD, and per attack the decision and the paired AUC
difference (unlearned minus the references' mean, 90% interval) under the most revealing conditioning (the label,
or the audit's inverted class embedding when a class is erased), on the audit's own scale (raw when a class is
erased, calibrated for a sample deletion). The full audit adds the generation checks; this is the fast loop for
comparing objectives (audit/probe.py: the original's and the references' work is done once). Methods that match
the forget images to non-members get the calibration split's non-members (never scored).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from audit.probe import AuditProbe, default_audit_config
from diffusion.io import write_json
from unlearn import METHODS


def membership_cells(membership: dict) -> str:
    """One line of cells, one per conditioning: decision, mean AUC difference over attacks [interval], vetoes."""
    return " ".join(f"{name}:{c['decision'][0]}{c['estimate']:+.2f}[{c['interval'][0]:+.2f},{c['interval'][1]:+.2f}]"
                    + (f" veto {','.join(c['vetoes'])}" if c["vetoes"] else "")
                    for name, c in membership.items() if "estimate" in c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-class", type=int, default=None)
    parser.add_argument("--forget-samples", type=int, default=0, help="member images of mixed classes to delete")
    parser.add_argument("--method", default="erasediff")
    parser.add_argument("--variants", default="[{}]", help="JSON list of parameter dicts")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class for the judge and FD")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("unlearning_membership.json"))
    args = parser.parse_args()
    variants = json.loads(args.variants)
    work = Path(tempfile.mkdtemp(prefix="erasediff-membership-"))
    config = default_audit_config(args.forget_class, args.forget_samples, args.seed, work,
                          eval_samples_per_class=args.per_class)
    probe = AuditProbe(config)
    task = probe.subjects.task
    task_name = f"{args.forget_samples} member images" if args.forget_samples else f"class {task.forget_classes[0]}"
    print(f"{task_name}: {len(task.forget)} forget vs {probe.subjects.sets.num_nonmembers} heldout images scored, "
          f"{len(probe.subjects.references)} references, {len(task.nonmembers)} non-members for matching methods")

    rows = []

    def report(label: str, model, seconds: float, params: dict) -> None:
        result = probe(model)
        membership = result.membership()
        utility = result.utility
        rows.append({"variant": label, "params": params, "seconds": seconds, "membership": membership,
                     **{k: utility.get(k) for k in ("forgotten_accuracy", "retained_accuracy", "retained_fd")}})
        forgotten = utility.get("forgotten_accuracy")
        print(f"{label:52s} {seconds:6.1f}s {'-' if forgotten is None else f'{forgotten:.2f}':>5s} "
              f"{utility['retained_accuracy']:.3f} {utility['retained_fd']:6.2f} | {membership_cells(membership)}",
              flush=True)

    print(f"{'variant':52s} {'secs':>7s} {'forg.':>5s} {'ret.':>5s} {'FD':>6s} | per conditioning: decision, "
          "mean AUC difference over attacks [90% interval, images and seeds]")
    report("original (no-op)", probe.fixed["original"], 0.0, {})
    for params in variants:
        params = dict(params)
        method = params.pop("method", args.method)
        start = time.perf_counter()
        result = METHODS.make(method, **params).unlearn(probe.fixed["original"], task, seed=args.seed, quiet=True)
        label = f"{method} {json.dumps(params, separators=(',', ':'))} ({result.steps} steps)"
        report(label, result.model, result.seconds, {"method": method, **params})
        rows[-1].update(wall_seconds=time.perf_counter() - start, steps=result.steps,
                        internal_auc=result.curves.get("internal_auc"))
    write_json(args.json, {"task": task_name, "rows": rows, "args": vars(args) | {"json": str(args.json)}})


if __name__ == "__main__":
    main()
