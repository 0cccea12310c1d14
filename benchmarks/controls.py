"""Known answers for the audit at full size: does the verdict say what is true?

    python benchmarks/controls.py --forget-classes 0,3,8 --forget-samples 50 --json controls.json

On the default reference model, for each task (each forget class, and one deletion of random member images), the
audit (default margins, K references retrained by the audit itself and cached) judges five models:

  (a) noop       the original presented as unlearned                          must never PASS
  (b) redirect   the original with the erased class's embedding row replaced  must never PASS
                 by another class's (every weight that learned the images kept; classes only)
  (c) early      EraseDiff stopped after 10% of its steps                     reported as it comes
  (d) retrain    retrained from scratch with a seed no reference used         must never FAIL
  (e) erasediff  EraseDiff at its defaults                                    reported as it comes

The first audit of the first task is exactly the default audit (``erasediff audit`` with no arguments) run on an
empty cache: its wall time is the default audit's "from nothing" time (install excluded). Prints one table of
verdicts with each check's decision and interval, and writes JSON. Every model is scored on the same images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audit.config import AuditConfig
from audit.run import run_audit
from diffusion.data import load_digits_dataset
from diffusion.io import cache_dir, write_json
from diffusion.model import DiffusionModel
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.training import TrainConfig
from unlearn import METHODS

CONTROLS = ("noop", "redirect", "early", "retrain", "erasediff")
MUST_NOT = {"noop": "PASS", "redirect": "PASS", "retrain": "FAIL"}
OTHER_SEED = 987_654  # the (d) retrain: no audit reference uses it (theirs derive from the audit seed)


def redirected(model: DiffusionModel, classes: tuple[int, ...]) -> DiffusionModel:
    """A copy whose embedding row of each erased class is that of the next retained class: the class is no longer
    generated under its label, yet every weight that learned its images is intact."""
    copy = model.copy()
    table = copy.unet.class_embedding.weight
    retained = [c for c in range(table.shape[0]) if c not in classes]
    with torch.no_grad():
        for c in classes:
            table[c] = table[min(retained, key=lambda r: (r - c) % table.shape[0])]
    return copy


def build_controls(original: DiffusionModel, task: ForgetTask, classes: tuple[int, ...], folder: Path,
                   seed: int, wanted: tuple[str, ...]) -> dict[str, Path]:
    """Save the ``wanted`` models of the controls that are not the original itself (nor the (e) audit, which trains
    its own); returns {control: folder}."""
    folder.mkdir(parents=True, exist_ok=True)
    models: dict[str, DiffusionModel] = {}
    if "early" in wanted:
        default_steps = METHODS.make("erasediff").steps
        models["early"] = METHODS.make("erasediff", steps=max(1, default_steps // 10)).unlearn(
            original, task, seed=seed, quiet=True).model
    if "retrain" in wanted:
        models["retrain"] = METHODS.make("retrain").unlearn(original, task, seed=OTHER_SEED, quiet=True).model
    if classes and "redirect" in wanted:
        models["redirect"] = redirected(original, classes)
    paths = {}
    for name, model in models.items():
        model.save(folder / name, {"role": f"control {name}"})
        paths[name] = folder / name
    return paths


def summary(results: dict) -> dict:
    """Verdict, checks, and for every attack and conditioning the (subject - references) AUC difference on both
    scales, so the power of raw against calibrated scores can be compared (estimate / standard error)."""
    keys = ("estimate", "standard_error", "low", "high")
    scales = {
        f"{attack}/{conditioning}/{scale}/{subject}": {k: diff[k] for k in keys}
        for attack, per_conditioning in results["membership"]["attacks"].items()
        for conditioning, comparison in per_conditioning.items()
        for scale, per_subject in comparison.get("auc", {}).items()
        for subject, diff in per_subject.items()
    }
    return {
        "verdict": results["verdict"],
        "power": results["power"],
        "checks": {c["name"]: {"decision": c["decision"], "estimate": c["estimate"], "interval": c["interval"]}
                   for c in results["checks"]},
        "auc_differences": scales,
        "seconds": results["timings"]["total_seconds"],
    }


def run_task(name: str, spec: ForgetSpec, args, dataset, splits, work: Path, rows: list[dict]) -> None:
    """The five controls of one task. The first audit, (e), runs with the built-in reference as the audit itself
    loads it (trained on the first task, then cached), so for class 0 it is exactly the default audit."""
    task = ForgetTask.from_spec(dataset, splits, spec)
    ids_file = None
    if spec.sample_ids:
        ids_file = work / f"{name}-ids.txt"
        ids_file.write_text(" ".join(map(str, spec.sample_ids)))
    base = dict(forget_classes=list(spec.classes), forget_ids=str(ids_file) if ids_file else None,
                retrain_references=args.references, seed=args.seed, quiet=True, force=True)
    wanted = tuple(args.controls.split(","))
    if "erasediff" in wanted:
        start = time.perf_counter()
        first = run_audit(AuditConfig(**base, out=str(work / name / "erasediff")))
        rows.append({"task": name, "control": "erasediff", **summary(first),
                     "wall_seconds": time.perf_counter() - start})
        print_row(rows[-1])
    original, original_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    controls = {"noop": original_dir, **build_controls(original, task, spec.classes, work / name / "models",
                                                         args.seed, wanted)}
    for control in ("noop", "redirect", "early", "retrain"):
        if control not in controls or control not in wanted:
            continue
        start = time.perf_counter()
        results = run_audit(AuditConfig(**base, model=str(original_dir), unlearned=str(controls[control]),
                                         out=str(work / name / control)))
        rows.append({"task": name, "control": control, **summary(results),
                     "wall_seconds": time.perf_counter() - start})
        print_row(rows[-1])


def print_row(row: dict) -> None:
    mias = [f"{k.split('[')[1][:-1]}:{v['decision'][0]}" + ("" if v["interval"] is None else
                                                               "[{:+.2f},{:+.2f}]".format(*v["interval"]))
            for k, v in row["checks"].items() if k.startswith("mia_auc")]
    others = " ".join(f"{k}:{v['decision'][0]}" for k, v in row["checks"].items() if not k.startswith("mia_auc"))
    bad = " <-- WRONG" if MUST_NOT.get(row["control"]) == row["verdict"] else ""
    print(f"{row['task']:10s} {row['control']:9s} {row['verdict']:12s} {row['wall_seconds']:6.0f}s  "
          f"{' '.join(mias)}  {others}{bad}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-classes", default="0,3,8", help="comma-separated classes, one task each")
    parser.add_argument("--forget-samples", type=int, default=50, help="member images of a sample deletion (0: none)")
    parser.add_argument("--references", type=int, default=AuditConfig().retrain_references)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--controls", default=",".join(CONTROLS),
                        help=f"comma-separated subset of {','.join(CONTROLS)} (default: all)")
    parser.add_argument("--work", type=Path, default=None, help="where models and audits go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=Path("controls.json"))
    args = parser.parse_args()
    unknown = sorted(set(args.controls.split(",")) - set(CONTROLS))
    if unknown:
        parser.error(f"--controls: unknown {', '.join(unknown)}; expected a subset of {','.join(CONTROLS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="erasediff-controls-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, 0)
    print(f"cache: {cache_dir()}  work: {work}", flush=True)
    rows: list[dict] = []
    tasks = [(f"class{c}", ForgetSpec(classes=(int(c),))) for c in args.forget_classes.split(",") if c.strip()]
    if args.forget_samples:
        rng = np.random.default_rng(args.seed)
        ids = rng.choice(splits.members, size=args.forget_samples, replace=False)
        tasks.append((f"samples{args.forget_samples}", ForgetSpec(sample_ids=tuple(int(i) for i in ids))))
    started = time.perf_counter()
    for name, spec in tasks:
        run_task(name, spec, args, dataset, splits, work, rows)
        write_json(args.json, {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()},
                               "total_seconds": time.perf_counter() - started})
    wrong = [r for r in rows if MUST_NOT.get(r["control"]) == r["verdict"]]
    print(f"{len(rows)} audits in {time.perf_counter() - started:.0f} s; known answers wrong: {len(wrong)}")
    print(json.dumps({r["task"] + "/" + r["control"]: r["verdict"] for r in rows}))


if __name__ == "__main__":
    main()
