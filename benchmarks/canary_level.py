"""The canary test's level on many exact models: every model that never saw a canary, under fresh random assignments.

    python benchmarks/canary_level.py --models ~/.cache/erasediff/retrained --json benchmarks/results/canary_level.json

The 400 canaries of ``benchmarks/canaries.py`` (same seed) are drawn from the digits' heldout images. A
class-conditional model trained on the digits' members (split seed 0, member fraction 1/4) or on a part of them (a
retrained reference of a class or image deletion) never saw one, so for it deleted and never-included canaries are
exchangeable under any assignment: the share of fresh random assignments on which the test says FAIL (randomisation
p < alpha) is the test's type-I error. Models of other data, of another split, with more members than the split
has (trained with canaries) or text models are skipped. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from audit.canary import CanaryAuditConfig, calibration_half, canary_test, score_canaries
from diffusion.canaries import draw_canaries
from diffusion.data import load_digits_dataset
from diffusion.io import write_json
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.splits import make_splits


def never_saw_a_canary(folder: Path, fingerprint: str, num_members: int) -> bool:
    """Whether the model in ``folder`` was trained on the digits' split-0 members or a part of them (its record)."""
    record = DiffusionModel.read_metadata(folder)
    splits = record.get("splits") or {}
    return ((record.get("data") or {}).get("fingerprint") == fingerprint and splits.get("seed") == 0
            and splits.get("member_fraction") == 0.25 and 0 < splits.get("num_members", num_members + 1) <= num_members
            and not (folder / "text_encoder").exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="folders holding model folders")
    parser.add_argument("--assignments", type=int, default=50, help="fresh assignments per model")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("canary_level.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_digits_dataset()
    plain = make_splits(dataset.labels, 0)
    canaries, _ = draw_canaries("digits", dataset, plain, 400, args.seed + 1)
    config = CanaryAuditConfig("", "", "", n_permutations=args.permutations, seed=args.seed, quiet=True)
    folders = sorted(f for root in args.models for f in root.iterdir()
                     if (f / "erasediff.json").is_file() and never_saw_a_canary(f, dataset.fingerprint(),
                                                                                 plain.members.size))
    rows = {}
    print(f"{len(folders)} exact models, {args.assignments} fresh assignments each, 400 canaries, alpha "
          f"{config.alpha}")
    for index, folder in enumerate(folders):
        model = load_model(folder)
        scores = score_canaries(model, dataset, canaries, config)
        p_values = []
        for draw in range(args.assignments):
            assigned = np.random.default_rng([args.seed, index, draw, 11]).random(canaries.ids.size) < 0.5
            calibration = calibration_half(assigned.size, assigned, draw)
            section = canary_test(scores, assigned, calibration, dataclasses.replace(config, seed=draw))
            p_values.append(section["p_value"])
        fails = int(np.sum(np.asarray(p_values) < config.alpha))
        members = DiffusionModel.read_metadata(folder)["splits"]["num_members"]
        rows[folder.name] = {"num_members": members, "fails": fails, "runs": args.assignments, "p_values": p_values}
        print(f"  {folder.name}  members {members:4d}  FAIL {fails:3d} / {args.assignments}")
    fails = sum(r["fails"] for r in rows.values())
    runs = sum(r["runs"] for r in rows.values())
    test = binomtest(fails, runs, config.alpha, alternative="greater")
    low, high = binomtest(fails, runs).proportion_ci(0.95)  # two-sided Clopper-Pearson
    total = time.perf_counter() - started
    print(f"pooled type-I error: {fails}/{runs} = {fails / runs:.1%} (95% interval {low:.1%}-{high:.1%}; one-sided "
          f"binomial test of 'above {config.alpha:g}': p = {test.pvalue:.2f}) over {len(rows)} models; {total:.0f} s")
    write_json(args.json, {"argv": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                           | {"models": [str(m) for m in args.models]}, "rows": rows, "fails": fails, "runs": runs,
                           "rate": fails / runs, "interval_95": [low, high], "p_above_alpha": test.pvalue,
                           "total_seconds": total})


if __name__ == "__main__":
    main()
