"""Cost and leakage of the attack battery on the reference model, side by side in one run.

    python benchmarks/attack_battery.py --out attacks.json

Prints (1) the throughput of a bare batched UNet forward pass (the limit), (2) per membership-inference attack:
model calls per sample, samples per second and the share of the bare throughput it reaches, with its AUC /
TPR@1%FPR for training members vs heldout (all classes) and for the forget class vs heldout of that class, and
(3) the cost and outcome of extraction, conditional regeneration and embedding inversion for the forget class.
Writes every number to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attacks import ATTACKS
from attacks.extraction import extract_training_data
from attacks.inversion import embedding_inversion
from attacks.metrics import membership_metrics
from attacks.regeneration import conditional_regeneration
from diffusion.data import load_digits_dataset
from diffusion.judge import load_or_train_judge
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, make_splits
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
    """Metrics of one attack on (members, nonmembers) and the scoring seconds."""
    a, b = attack.score(model, members, seed=seed), attack.score(model, nonmembers, seed=seed)
    metrics = membership_metrics(a.scores, b.scores, seed=seed)
    metrics.pop("roc")
    return metrics, a.seconds + b.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="attacks_benchmark.json")
    parser.add_argument("--forget-class", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--extraction-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, seed=0)
    model, model_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    judge = load_or_train_judge(dataset)
    spec = ForgetSpec(classes=(args.forget_class,))
    members, heldout = dataset.select(splits.members), dataset.select(splits.heldout)
    forget = dataset.select(spec.forget_ids(dataset.labels, splits))
    forget_heldout = dataset.select(spec.heldout_ids(dataset.labels, splits))
    report = {"model": str(model_dir), "threads": torch.get_num_threads(), "batch_size": args.batch_size}

    bare = {batch: forward_throughput(model, batch, repeats=max(3, 3000 // batch)) for batch in (64, 960)}
    report["bare_forward_images_per_second"] = bare
    print(f"reference model {model_dir} ({torch.get_num_threads()} threads)")
    print(f"bare forward pass: {bare[64]:.0f} images/s at batch 64, {bare[960]:.0f} images/s at batch 960\n")
    header = (f"{'attack':7s} {'calls':>5s} {'samples/s':>9s} {'of bare':>7s} | {'AUC all (95% CI)':>22s} "
              f"{'TPR@1%':>6s} | {'AUC class':>9s} {'TPR@1%':>6s}")
    print(header)
    print("-" * len(header))
    report["attacks"] = {}
    for name in ATTACKS:
        attack = ATTACKS.make(name, batch_size=args.batch_size)
        overall, seconds = leakage(attack, model, members, heldout, args.seed)
        per_class, _ = leakage(attack, model, forget, forget_heldout, args.seed)
        calls = attack.calls_per_sample(attack.resolve(model) | attack.get_params())
        rate = (len(members) + len(heldout)) / seconds
        batch_in_call = args.batch_size * (calls if name == "loss" else 1)
        limit = bare[960] if batch_in_call >= 960 else bare[64]
        report["attacks"][name] = {
            "calls_per_sample": calls, "samples_per_second": rate, "share_of_bare_forward": rate * calls / limit,
            "members_vs_heldout": overall, "forget_class_vs_heldout": per_class,
        }
        low, high = overall["auc_ci"]
        print(f"{name:7s} {calls:5d} {rate:9.1f} {rate * calls / limit:7.0%} | {overall['auc']:.3f} "
              f"[{low:.3f}, {high:.3f}]   {overall['tpr_at_1pct_fpr']:6.3f} | {per_class['auc']:9.3f} "
              f"{per_class['tpr_at_1pct_fpr']:6.3f}")

    probes = {}
    start = time.perf_counter()
    found = extract_training_data(model, members, [args.forget_class], per_class=args.extraction_per_class,
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
    print(f"extraction   {probes['extraction']['seconds']:6.1f} s  {found.to_dict()['num_extracted']} of "
          f"{len(found.extracted)} generated images copy a training image")
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
