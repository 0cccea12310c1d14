"""Cost and leakage of the attack battery on the reference model, side by side in one run.

    python benchmarks/attack_battery.py --out benchmarks/results/attacks.json

Prints (1) the throughput of a bare batched UNet forward pass (the limit), (2) per membership-inference attack,
"fixed" at its paper defaults and "fitted" on a calibration split (``--calibration-images`` members and as many
heldout images, never scored, as the audit does): model calls per sample, samples per second and the share of the
bare throughput it reaches, AUC with its 95% interval and TPR at 1% FPR and at the lowest FPR the heldout images
resolve, for training members vs heldout (all classes) and for the forget class vs heldout of that class, and
(3) the cost and outcome of extraction (at alpha 0.15 and the paper's 0.5), conditional regeneration and
embedding inversion for the forget class. Writes every number to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attacks import ATTACKS, CalibrationSet
from attacks.extraction import extract_training_data
from attacks.inversion import embedding_inversion
from attacks.metrics import membership_metrics, resolvable_fpr, tpr_at_fpr
from attacks.regeneration import conditional_regeneration
from diffusion.data import load_digits_dataset
from diffusion.judge import load_or_train_judge
from diffusion.reference import load_or_train_reference
from diffusion.splits import make_splits
from diffusion.training import TrainConfig


def forward_throughput(model, batch: int, repeats: int) -> float:
    """Images per second through ``model.predict_noise`` at a fixed batch size (no grad, eval mode)."""
    x = torch.randn(batch, *model.image_shape, device=model.device)
    t = torch.randint(0, model.num_train_timesteps, (batch,), device=model.device)
    labels = torch.randint(0, model.num_classes, (batch,), device=model.device) if model.num_classes else None
    model.unet.eval()
    with torch.no_grad():
        model.predict_noise(x, t, labels)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.predict_noise(x, t, labels)
    return batch * repeats / (time.perf_counter() - start)


def leakage(attack, model, members, nonmembers, seed: int) -> tuple[dict, float]:
    """Metrics of one attack on (members, nonmembers) and the scoring seconds; adds the TPR at the lowest FPR the
    non-members resolve (one false positive)."""
    a, b = attack.score(model, members, seed=seed), attack.score(model, nonmembers, seed=seed)
    metrics = membership_metrics(a.scores, b.scores, seed=seed)
    metrics.pop("roc")
    lowest = resolvable_fpr(len(b.scores), 0.0)
    metrics["lowest_resolvable_fpr"] = lowest
    metrics["tpr_at_lowest_resolvable_fpr"] = tpr_at_fpr(a.scores, b.scores, lowest)[0]
    return metrics, a.seconds + b.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="attacks_benchmark.json")
    parser.add_argument("--forget-class", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--extraction-per-class", type=int, default=100)
    parser.add_argument("--calibration-images", type=int, default=100, help="members and heldout images to fit on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, seed=0)
    model, model_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    judge = load_or_train_judge(dataset)
    training = dataset.select(splits.members)
    calibration, members, heldout = CalibrationSet.split_off(training, dataset.select(splits.heldout),
                                                      args.calibration_images, args.seed)
    in_class = [s.take(s.labels == args.forget_class) for s in (members, heldout)]
    forget, forget_heldout = in_class
    report = {"model": str(model_dir), "threads": torch.get_num_threads(), "batch_size": args.batch_size}

    bare = {batch: forward_throughput(model, batch, repeats=max(3, 3000 // batch)) for batch in (64, 960)}
    report["bare_forward_images_per_second"] = bare
    print(f"reference model {model_dir} ({torch.get_num_threads()} threads)")
    print(f"bare forward pass: {bare[64]:.0f} images/s at batch 64, {bare[960]:.0f} images/s at batch 960\n")
    header = (f"{'attack':17s} {'variant':7s} {'choice':>16s} {'calls':>5s} {'samples/s':>9s} {'of bare':>7s} | "
              f"{'AUC all (95% CI)':>22s} {'TPR@1%':>6s} {'TPR@low':>7s} | {'AUC class':>9s} {'TPR@1%':>6s}")
    print(f"{len(members)} members vs {len(heldout)} heldout scored; {len(calibration.members)} + "
          f"{len(calibration.nonmembers)} calibration images (never scored)")
    print(header)
    print("-" * len(header))
    report["calibration"] = calibration.summary()
    report["attacks"] = {}
    for name in ATTACKS:
        report["attacks"][name] = {}
        for variant in ("fixed", "fitted"):
            attack = ATTACKS.make(name, batch_size=args.batch_size)
            if variant == "fixed" and attack.needs_fit:
                continue
            fit_seconds = 0.0
            if variant == "fitted":
                start = time.perf_counter()
                attack.fit(model, calibration, seed=args.seed)
                fit_seconds = time.perf_counter() - start
            overall, seconds = leakage(attack, model, members, heldout, args.seed)
            per_class, _ = leakage(attack, model, forget, forget_heldout, args.seed)
            calls = attack.calls_per_sample(attack.resolve(model) | attack.get_params())
            rate = (len(members) + len(heldout)) / seconds
            limit = bare[960] if args.batch_size * calls >= 960 else bare[64]
            choice = attack.calibration_["chosen"] if attack.is_fitted else {}
            report["attacks"][name][variant] = {
                "params": attack.get_params(), "choice": choice, "fit_seconds": fit_seconds,
                "calls_per_sample": calls, "samples_per_second": rate, "share_of_bare_forward": rate * calls / limit,
                "members_vs_heldout": overall, "forget_class_vs_heldout": per_class,
            }
            low, high = overall["auc_ci"]
            shown = ",".join(f"{v}" for v in choice.values()).replace(" ", "")[:16]
            print(f"{name:17s} {variant:7s} {shown:>16s} {calls:5d} {rate:9.1f} {rate * calls / limit:7.0%} | "
                  f"{overall['auc']:.3f} [{low:.3f}, {high:.3f}]   {overall['tpr_at_1pct_fpr']:6.3f} "
                  f"{overall['tpr_at_lowest_resolvable_fpr']:7.3f} | {per_class['auc']:9.3f} "
                  f"{per_class['tpr_at_1pct_fpr']:6.3f}", flush=True)
    print(f"TPR@low: at FPR {resolvable_fpr(len(heldout), 0.0):.5f} (one false positive among the heldout images)")

    probes = {}
    start = time.perf_counter()
    found = extract_training_data(model, training, [args.forget_class], per_class=args.extraction_per_class,
                                  seed=args.seed)
    probes["extraction"] = {"seconds": time.perf_counter() - start, **found.to_dict()}
    start = time.perf_counter()
    regenerated = conditional_regeneration(model, judge, forget, [args.forget_class], seed=args.seed)
    probes["regeneration"] = {"seconds": time.perf_counter() - start, **regenerated.to_dict()}
    start = time.perf_counter()
    inverted = embedding_inversion(model, judge, forget, [args.forget_class], seed=args.seed)
    probes["inversion"] = {"seconds": time.perf_counter() - start, **inverted.to_dict()}
    report["probes"] = probes
    print()
    paper = probes["extraction"]["at_paper_alpha"]
    print(f"extraction   {probes['extraction']['seconds']:6.1f} s  {probes['extraction']['num_extracted']} of "
          f"{len(found.extracted)} generated images copy a training image at alpha {found.params['alpha']}, "
          f"{paper['num_extracted']} at the paper's alpha {paper['alpha']}")
    for key in ("regeneration", "inversion"):
        entry = probes[key]
        print(f"{key:12s} {entry['seconds']:6.1f} s  judge accuracy {entry['judge_accuracy']:.2f}, "
              f"p(class) {entry['mean_probability']:.2f}, entropy {entry['entropy']:.2f}, "
              f"nn distance to forget {entry['nn_distance_to_forget']:.2f}")
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2, default=float)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
