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
comparing objectives. Methods that match the
forget images to non-members get the calibration split's non-members (never scored).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from attacks.inversion import fit_class_embedding
from audit.config import AuditConfig
from audit.membership import run_membership
from audit.run import INVERSION_IMAGES_PER_CLASS, prepare_subjects
from diffusion.data import load_digits_dataset
from diffusion.io import write_json
from diffusion.quality import evaluate_generation
from diffusion.reference import load_or_train_reference
from diffusion.splits import make_splits
from diffusion.training import TrainConfig
from unlearn import METHODS


def inverted(subjects, model, seed: int):
    """The audit's inverted class embedding of ``model`` for the erased classes (None for a sample deletion)."""
    if subjects.inversion_images is None:
        return None
    return fit_class_embedding(model, subjects.inversion_images, subjects.spec.classes, seed=seed,
                               images_per_class=INVERSION_IMAGES_PER_CLASS)


def membership_row(subjects, config, model, inversions: dict, work: Path) -> dict:
    """The audit's per-attack comparison of ``model`` (as the unlearned model), under the conditioning where the
    unlearned model's AUC difference is largest (label, or the inverted embedding when a class is erased)."""
    models = {**subjects.models, "unlearned": model}
    _, comparisons = run_membership(subjects.attacks, models, inversions, subjects.sets, subjects.references,
                                    config.thresholds, config.seed, work)
    row = {}
    for name, per in comparisons.items():
        conditioning, comparison = max(per.items(),
                                       key=lambda item: item[1]["auc"][item[1]["scale"]]["unlearned"]["estimate"])
        diff = comparison["auc"][comparison["scale"]]["unlearned"]
        row[name] = {"decision": comparison["decision"], "estimate": diff["estimate"], "conditioning": conditioning,
                     "interval": [diff["low"], diff["high"]], "scale": comparison["scale"]}
    return row


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
    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, 0)
    _, original_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    base = dict(model=str(original_dir), unlearned=str(original_dir), seed=args.seed, quiet=True,
                out=str(work / "unused"))
    if args.forget_samples:
        ids = np.random.default_rng(args.seed).choice(splits.members, size=args.forget_samples, replace=False)
        ids_file = work / "ids.txt"
        ids_file.write_text(" ".join(map(str, ids)))
        base.update(forget_classes=[], forget_ids=str(ids_file))
        task_name = f"{args.forget_samples} member images"
    else:
        base.update(forget_classes=[0 if args.forget_class is None else args.forget_class])
        task_name = f"class {base['forget_classes'][0]}"
    config = AuditConfig(**base)
    subjects = prepare_subjects(config)
    for attack in subjects.attacks:
        attack.fit(subjects.models["original"], subjects.calibration, seed=config.seed)
    task = subjects.task
    classes = task.forget_classes
    print(f"{task_name}: {len(task.forget)} forget vs {subjects.sets.num_nonmembers} heldout images scored, "
          f"{len(subjects.references)} references, {len(task.nonmembers)} non-members for matching methods")

    rows = []
    fitted = {role: inverted(subjects, model, config.seed) for role, model in subjects.models.items()}

    def report(label: str, model, seconds: float, params: dict) -> None:
        utility = evaluate_generation(model, subjects.judge, subjects.dataset, forget_classes=classes,
                                      per_class=args.per_class, seed=config.seed, steps=config.eval_steps)
        inversions = {} if fitted["original"] is None else {**fitted, "unlearned": inverted(subjects, model,
                                                                                             config.seed)}
        membership = membership_row(subjects, config, model, inversions, work)
        rows.append({"variant": label, "params": params, "seconds": seconds, "membership": membership,
                     **{k: utility.get(k) for k in ("forgotten_accuracy", "retained_accuracy", "retained_fd")}})
        forgotten = utility.get("forgotten_accuracy")
        cells = " ".join(f"{name}{'' if c['conditioning'] == 'label' else '*'}:{c['decision'][0]}{c['estimate']:+.2f}"
                         f"[{c['interval'][0]:+.2f},{c['interval'][1]:+.2f}]" for name, c in membership.items())
        print(f"{label:52s} {seconds:6.1f}s {'-' if forgotten is None else f'{forgotten:.2f}':>5s} "
              f"{utility['retained_accuracy']:.3f} {utility['retained_fd']:6.2f} | {cells}", flush=True)

    print(f"{'variant':52s} {'secs':>7s} {'forg.':>5s} {'ret.':>5s} {'FD':>6s} | per attack: decision, "
          "AUC difference [90% interval]; * = under the inverted embedding")
    report("original (no-op)", subjects.models["original"], 0.0, {})
    for params in variants:
        params = dict(params)
        method = params.pop("method", args.method)
        start = time.perf_counter()
        result = METHODS.make(method, **params).unlearn(subjects.models["original"], task, seed=args.seed, quiet=True)
        label = f"{method} {json.dumps(params, separators=(',', ':'))}"
        report(label, result.model, result.seconds, {"method": method, **params})
        rows[-1]["wall_seconds"] = time.perf_counter() - start
    write_json(args.json, {"task": task_name, "rows": rows, "args": vars(args) | {"json": str(args.json)}})


if __name__ == "__main__":
    main()
