"""How much the reference model leaks against how long it trains and how many members it has.

    python benchmarks/reference_leakage.py --steps 1000,2000,3000,4000,6000 --member-fractions 0.5,0.25 \\
        --json benchmarks/results/reference_leakage.json

An audit has power only where the original model leaks. For each member fraction one model is trained with the
reference recipe (``TrainConfig`` defaults, the longest ``--steps``) and snapshotted at every other step count
(with a constant learning rate a snapshot IS the shorter run's model, see ``train_denoiser``). Each snapshot gets:
training seconds so far (evaluation excluded), judge accuracy of 20 DDIM-50 samples per class, and every
membership attack fitted on a calibration split (100 members + 100 heldout images, never scored, as the audit
does) then scored on the other members vs the other heldout images: AUC and TPR at 1% FPR. Prints one table.
"""

from __future__ import annotations

import argparse
import time

import torch

from attacks import ATTACKS, CalibrationSet
from attacks.metrics import membership_metrics
from diffusion.data import load_digits_dataset
from diffusion.io import write_json
from diffusion.judge import load_or_train_judge
from diffusion.quality import evaluate_generation
from diffusion.reference import untrained_model
from diffusion.splits import make_splits
from diffusion.training import TrainConfig, train_denoiser


def measure(model, judge, dataset, splits, attack_names: list[str], calibration_images: int, seed: int) -> dict:
    """Judge accuracy and every attack's members-vs-heldout AUC / TPR@1%FPR on one snapshot."""
    quality = evaluate_generation(model, judge, dataset, per_class=20, seed=seed)
    calibration, members, heldout = CalibrationSet.split_off(dataset.select(splits.members),
                                                             dataset.select(splits.heldout), calibration_images, seed)
    row = {"judge_accuracy": quality["overall_accuracy"], "attacks": {}}
    for name in attack_names:
        attack = ATTACKS.make(name).fit(model, calibration, seed=seed)
        metrics = membership_metrics(attack.score(model, members, seed=seed).scores,
                                     attack.score(model, heldout, seed=seed).scores, seed=seed, n_bootstrap=200)
        row["attacks"][name] = {"auc": metrics["auc"], "auc_ci": metrics["auc_ci"],
                                "tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"], "chosen": attack.calibration_["chosen"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="1000,2000,3000,4000,6000")
    parser.add_argument("--member-fractions", default="0.5,0.25")
    parser.add_argument("--attacks", default="loss,sima,pia,secmi")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="reference_leakage.json")
    args = parser.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    attack_names = ATTACKS.parse_names(args.attacks, "--attacks")
    dataset = load_digits_dataset()
    judge = load_or_train_judge(dataset)
    rows = []
    print(f"{'members':>7s} {'steps':>6s} {'train s':>7s} {'judge':>5s} | "
          + " | ".join(f"{n:>6s} AUC TPR@1%" for n in attack_names), flush=True)
    for fraction in (float(f) for f in args.member_fractions.split(",")):
        splits = make_splits(dataset.labels, 0, fraction)
        model = untrained_model(dataset, TrainConfig())
        members = dataset.select(splits.members)
        clock = {"start": time.perf_counter(), "paused": 0.0}

        def snapshot(step: int, snap, fraction=fraction, splits=splits, clock=clock) -> None:
            trained = time.perf_counter() - clock["start"] - clock["paused"]
            paused = time.perf_counter()
            row = {"member_fraction": fraction, "num_members": len(splits.members), "steps": step,
                   "train_seconds": trained, **measure(snap, judge, dataset, splits, attack_names,
                                                       args.calibration_images, args.seed)}
            clock["paused"] += time.perf_counter() - paused
            rows.append(row)
            cells = " | ".join(f"{row['attacks'][n]['auc']:6.3f} {row['attacks'][n]['tpr_at_1pct_fpr']:9.3f}"
                               for n in attack_names)
            print(f"{row['num_members']:7d} {step:6d} {trained:7.0f} {row['judge_accuracy']:5.2f} | {cells}",
                  flush=True)
            write_json(args.json, {"rows": rows, "args": vars(args), "threads": torch.get_num_threads()})

        train_denoiser(model, members.images, members.labels, TrainConfig(steps=steps[-1]), quiet=True,
                       snapshot_steps=set(steps), on_snapshot=snapshot)
    best = max(rows, key=lambda r: max(a["auc"] for a in r["attacks"].values()))
    print(f"most leakage: {best['num_members']} members, {best['steps']} steps ({best['train_seconds']:.0f} s): "
          + ", ".join(f"{n} {a['auc']:.3f}" for n, a in best["attacks"].items()))


if __name__ == "__main__":
    main()
