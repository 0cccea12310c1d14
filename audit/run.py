"""One audit run: original vs unlearned (vs retrained) model, every probe on each, checks, verdict, files.

The output folder holds ``results.json`` (schema below), ``scores/<attack>.csv`` (one row per sample and
model), ``images/*.png`` (sample grids, extraction pairs, resurrection samples) and ``report.html``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from attacks import make_attack
from attacks.extraction import extract_training_data
from attacks.inversion import embedding_inversion
from attacks.metrics import membership_metrics
from attacks.regeneration import conditional_regeneration
from diffusion.data import ImageDataset, LabeledImages, load_dataset
from diffusion.environment import environment_info
from diffusion.errors import UsageError
from diffusion.io import atomic_output_dir, cache_dir, write_json
from diffusion.judge import Judge, load_or_train_judge
from diffusion.model import DiffusionModel
from diffusion.quality import evaluate_generation, generate_per_class
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, Splits, make_splits, read_sample_ids
from diffusion.training import TrainConfig
from reports import write_report
from unlearn import make_unlearner
from unlearn.base import ForgetTask

from .checks import evaluate_checks, verdict
from .config import AuditConfig
from .images import save_grid, save_pairs

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class AuditSubjects:
    """The data, the forget task and the models under audit, keyed by role."""

    dataset: ImageDataset
    splits: Splits
    spec: ForgetSpec
    task: ForgetTask
    judge: Judge
    models: dict[str, DiffusionModel]
    sources: dict[str, dict]
    unlearning: dict | None


def _load_model(source: str, role: str) -> DiffusionModel:
    model = DiffusionModel.load(source)
    logger.info("loaded %s model from %s", role, source)
    return model


def _forget_spec(config: AuditConfig) -> ForgetSpec:
    sample_ids = read_sample_ids(config.forget_ids) if config.forget_ids else ()
    return ForgetSpec(classes=tuple(config.forget_classes), sample_ids=sample_ids, label=config.forget_label)


def _retrained_model(original: DiffusionModel, task: ForgetTask, spec: ForgetSpec, config: AuditConfig):
    """Train the retrained-without-forget reference, or reuse it from the cache (keyed by content)."""
    retrain = make_unlearner("retrain")
    key = hashlib.sha256(
        json.dumps([original.fingerprint(), spec.fingerprint(), retrain.get_params(), config.seed,
                    config.data, config.split_seed, config.member_fraction], default=str).encode()
    ).hexdigest()[:16]
    directory = cache_dir() / "retrained" / key
    if (directory / "erasediff.json").is_file():
        logger.info("reusing cached retrained reference %s", directory)
        return DiffusionModel.load(directory), {"source": str(directory), "cached": True}
    result = retrain.unlearn(original, task, seed=config.seed, quiet=config.quiet)
    with atomic_output_dir(directory, force=True) as tmp:
        result.model.save(tmp, {"role": "retrained", "forget_spec": spec.to_dict(), "seconds": result.seconds,
                                "steps": result.steps, "params": result.params})
    return result.model, {"source": str(directory), "cached": False, "seconds": result.seconds}


def _recorded_unlearning(metadata: dict) -> dict | None:
    """The unlearning record of a model given by path (``erasediff unlearn`` writes one), else None."""
    if "method" not in metadata:
        return None
    return {"method": metadata["method"], "params": metadata.get("params", {}), "steps": metadata.get("steps"),
            "seconds": metadata.get("wall_seconds"), "curves": metadata.get("curves", {})}


def prepare_subjects(config: AuditConfig) -> AuditSubjects:
    """Load or build every model under audit; all user mistakes surface here, before heavy work."""
    for name in config.attacks:
        make_attack(name)
    unlearner = make_unlearner(config.method, **config.method_params) if config.unlearned is None else None
    dataset = load_dataset(config.data)
    splits = make_splits(dataset.labels, config.split_seed, config.member_fraction)
    spec = _forget_spec(config)
    unlearned_model = _load_model(config.unlearned, "unlearned") if config.unlearned else None
    retrained_model = _load_model(config.retrained, "retrained") if config.retrained else None
    if config.model is None:
        original, directory, trained = load_or_train_reference(dataset, splits, TrainConfig(), quiet=config.quiet)
        sources = {"original": {"source": f"built-in reference ({directory})", "trained_now": trained}}
    else:
        original = _load_model(config.model, "original")
        sources = {"original": {"source": config.model}}
    num_classes = original.require_class_conditioning("the audit")
    if num_classes != dataset.num_classes:
        raise UsageError(f"the model has {num_classes} classes but the data '{config.data}' has "
                         f"{dataset.num_classes}; give the data the model was trained on")
    spec.validate(dataset.labels, splits, num_classes)
    task = ForgetTask.from_spec(dataset, splits, spec)
    models = {"original": original}
    judge = load_or_train_judge(dataset)
    unlearning = None
    if unlearned_model is not None:
        models["unlearned"] = unlearned_model
        sources["unlearned"] = {"source": config.unlearned}
        unlearning = _recorded_unlearning(DiffusionModel.read_metadata(config.unlearned))
    else:
        result = unlearner.unlearn(original, task, seed=config.seed, quiet=config.quiet)
        models["unlearned"] = result.model
        sources["unlearned"] = {"source": f"{result.method} run in this audit"}
        unlearning = {"method": result.method, "params": result.params, "steps": result.steps,
                      "seconds": result.seconds, "curves": result.curves}
    if retrained_model is not None:
        models["retrained"] = retrained_model
        sources["retrained"] = {"source": config.retrained}
    elif config.retrain:
        models["retrained"], sources["retrained"] = _retrained_model(original, task, spec, config)
    for role, model in models.items():
        sources[role]["fingerprint"] = model.fingerprint()
        if model.num_classes != num_classes:
            raise UsageError(f"the {role} model has {model.num_classes} classes; the original has {num_classes}")
    return AuditSubjects(dataset, splits, spec, task, judge, models, sources, unlearning)


def _membership(subjects: AuditSubjects, config: AuditConfig, out: Path) -> dict:
    """Every MIA on every model: forget set (members) vs heldout non-members of the same classes."""
    forget = subjects.task.forget
    heldout = subjects.dataset.select(subjects.spec.heldout_ids(subjects.dataset.labels, subjects.splits))
    both = LabeledImages(torch.cat([forget.images, heldout.images]), torch.cat([forget.labels, heldout.labels]),
                         torch.cat([forget.ids, heldout.ids]))
    n_forget = len(forget)
    results: dict = {}
    (out / "scores").mkdir(exist_ok=True)
    for name in config.attacks:
        attack = make_attack(name)
        results[name] = {}
        rows = []
        for role, model in subjects.models.items():
            scored = attack.score(model, both, seed=config.seed)
            member, nonmember = scored.scores[:n_forget], scored.scores[n_forget:]
            metrics = membership_metrics(member, nonmember, seed=config.seed)
            metrics["cost"] = scored.to_dict()
            results[name][role] = metrics
            rows += [(int(i), "forget" if k < n_forget else "heldout", int(k < n_forget), role, float(s))
                     for k, (i, s) in enumerate(zip(scored.sample_ids, scored.scores))]
            logger.info("%s on %s: AUC %.3f", name, role, metrics["auc"])
        with open(out / "scores" / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sample_id", "split", "is_member", "model", "score"])
            writer.writerows(rows)
    return results


def _generation(subjects: AuditSubjects, config: AuditConfig, images_dir: Path) -> tuple[dict, dict, dict]:
    """Utility, extraction and resurrection on every model, with the images the report shows."""
    classes = subjects.spec.classes
    utility, extraction, resurrection, images = {}, {}, {}, {}
    retained_show = subjects.task.retained_classes[:4]
    train_set = subjects.dataset.select(subjects.splits.members)
    forget_ids = set(subjects.task.forget.ids.tolist())
    target_classes = list(classes) if classes else sorted(set(subjects.task.forget.labels.tolist()))
    for role, model in subjects.models.items():
        utility[role] = evaluate_generation(model, subjects.judge, subjects.dataset, forget_classes=classes,
                                            per_class=config.eval_samples_per_class, seed=config.seed,
                                            steps=config.eval_steps)
        for kind, show in {"forgotten": target_classes, "retained": retained_show}.items():
            grid, _ = generate_per_class(model, show, 8, seed=config.seed, steps=config.eval_steps)
            images[f"{role}_{kind}"] = save_grid(grid, images_dir / f"{role}_{kind}.png", columns=8).name
        found = extract_training_data(model, train_set, target_classes, per_class=config.extraction_samples_per_class,
                                      seed=config.seed, steps=config.eval_steps)
        extraction[role] = found.to_dict()
        extraction[role]["num_forget_extracted"] = len(forget_ids & set(found.extracted_training_ids))
        copies, originals = found.pairs()
        if len(copies):
            images[f"{role}_extraction"] = save_pairs(copies[:16], originals[:16],
                                                      images_dir / f"{role}_extraction.png").name
        if config.resurrection and classes:
            regenerated = conditional_regeneration(model, subjects.judge, subjects.task.forget, classes,
                                                   seed=config.seed, per_class=config.eval_samples_per_class,
                                                   steps=config.eval_steps)
            inverted = embedding_inversion(model, subjects.judge, subjects.task.forget, classes, seed=config.seed,
                                           per_class=config.eval_samples_per_class, sample_steps=config.eval_steps,
                                           quiet=config.quiet)
            images[f"{role}_inversion"] = save_grid(inverted.images[:16], images_dir / f"{role}_inversion.png",
                                                    columns=8).name
            resurrection[role] = {"regeneration": regenerated.to_dict(), "inversion": inverted.to_dict()}
    return utility, {"extraction": extraction, "resurrection": resurrection}, images


def run_audit(config: AuditConfig) -> dict:
    """Run the whole audit and write the output folder atomically; returns the results document."""
    started = time.perf_counter()
    with atomic_output_dir(config.out, config.force) as out:
        subjects = prepare_subjects(config)
        prepared = time.perf_counter()
        images_dir = out / "images"
        images_dir.mkdir()
        attacks = _membership(subjects, config, out)
        attacked = time.perf_counter()
        utility, probes, images = _generation(subjects, config, images_dir)
        results = {
            "schema_version": SCHEMA_VERSION,
            "verdict": None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config.to_dict(),
            "forget_spec": subjects.spec.to_dict(),
            "data": {"name": subjects.dataset.name, "fingerprint": subjects.dataset.fingerprint(),
                     "class_names": list(subjects.dataset.class_names), "splits": subjects.splits.to_dict(),
                     "num_forget": len(subjects.task.forget), "num_retain": len(subjects.task.retain),
                     "num_heldout": int(len(subjects.spec.heldout_ids(subjects.dataset.labels, subjects.splits)))},
            "environment": {**environment_info(), "seed": config.seed},
            "judge": {k: v for k, v in subjects.judge.record.items() if k != "test_ids"},
            "models": subjects.sources,
            "unlearning": subjects.unlearning,
            "attacks": attacks,
            "utility": utility,
            **probes,
            "images": images,
        }
        checks = evaluate_checks(results, config.thresholds)
        results["checks"] = [c.to_dict() for c in checks]
        results["verdict"] = verdict(checks)
        results["timings"] = {"prepare_seconds": prepared - started, "attacks_seconds": attacked - prepared,
                              "generation_seconds": time.perf_counter() - attacked,
                              "total_seconds": time.perf_counter() - started}
        write_json(out / "results.json", results)
        write_report(out / "results.json")
    return results
