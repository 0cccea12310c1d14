"""One audit run: original vs unlearned (vs retrained) model, every probe on each, checks, verdict, files.

The output folder holds ``results.json`` (schema below), ``scores/<attack>.csv`` (one row per sample and
model), ``images/*.png`` (sample grids, extraction pairs, resurrection samples) and ``report.html``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from attacks import ATTACKS, Attack
from attacks.base import write_scores_csv
from attacks.extraction import extract_training_data
from attacks.inversion import embedding_inversion
from attacks.metrics import membership_metrics
from attacks.regeneration import conditional_regeneration
from diffusion.cache import cache_entry, load_or_build_model
from diffusion.data import ImageDataset, LabeledImages, load_dataset
from diffusion.environment import environment_info
from diffusion.io import atomic_output_dir, write_json
from diffusion.judge import Judge, load_or_train_judge
from diffusion.model import DiffusionModel
from diffusion.provenance import check_provenance, load_data_for_model
from diffusion.quality import evaluate_generation, generate_per_class
from diffusion.reference import load_or_train_reference, untrained_model
from diffusion.splits import ForgetSpec, ForgetTask, Splits, make_splits, read_sample_ids
from diffusion.training import TrainConfig
from reports import write_report
from reports.html import SCHEMA_VERSION
from unlearn import METHODS, Unlearner

from .checks import evaluate_checks, verdict
from .config import AuditConfig
from .images import save_grid, save_pairs

logger = logging.getLogger(__name__)



@dataclass
class AuditSubjects:
    """The data, the forget task, the attacks and the models under audit, keyed by role."""

    dataset: ImageDataset
    splits: Splits
    spec: ForgetSpec
    task: ForgetTask
    attacks: list[Attack]
    judge: Judge
    models: dict[str, DiffusionModel]
    sources: dict[str, dict]
    unlearning: dict | None


def _forget_spec(config: AuditConfig) -> ForgetSpec:
    sample_ids = read_sample_ids(config.forget_ids) if config.forget_ids else ()
    return ForgetSpec(classes=tuple(config.forget_classes), sample_ids=sample_ids, label=config.forget_label)


def _retrained_model(
    retrain: Unlearner, original: DiffusionModel, task: ForgetTask, data: tuple[ImageDataset, Splits, ForgetSpec],
    config: AuditConfig,
) -> tuple[DiffusionModel, dict]:
    """The retrained-without-forget reference, from the cache (keyed by content) or trained now."""
    dataset, splits, spec = data
    payload = {"original": original.fingerprint(), "forget": spec.fingerprint(), "params": retrain.get_params(),
               "seed": config.seed, "data": dataset.fingerprint(), "splits": splits.to_dict()}
    directory = cache_entry("retrained", payload)

    def build() -> tuple[DiffusionModel, dict]:
        result = retrain.unlearn(original, task, seed=config.seed, quiet=config.quiet)
        record = {"role": "retrained", "forget_spec": spec.to_dict(), "seconds": result.seconds,
                  "steps": result.steps, "params": result.params, "splits": splits.to_dict(),
                  "data": {"name": dataset.name, "fingerprint": dataset.fingerprint()}}
        return result.model, record

    model, built = load_or_build_model(directory, build, "retrained reference")
    return model, {"source": str(directory), "cached": not built}


def _recorded_unlearning(metadata: dict) -> dict | None:
    """The unlearning record of a model given by path (``erasediff unlearn`` writes one), else None."""
    if "method" not in metadata:
        return None
    return {"method": metadata["method"], "params": metadata.get("params", {}), "steps": metadata.get("steps"),
            "seconds": metadata.get("wall_seconds"), "curves": metadata.get("curves", {})}


def prepare_subjects(config: AuditConfig) -> AuditSubjects:
    """Check everything first, then load or build every model under audit.

    Every user mistake (a method or attack parameter, a forget spec, a model that does not fit the data or the
    attacks) surfaces before any training: the built-in reference is checked through an untrained model of its
    architecture.
    """
    attacks = [ATTACKS.make(name) for name in config.attacks]
    unlearner = METHODS.make(config.method, **config.method_params) if config.unlearned is None else None
    retrain = METHODS.make("retrain") if config.retrained is None and config.retrain else None
    paths = {"original": config.model, "unlearned": config.unlearned, "retrained": config.retrained}
    given = {role: DiffusionModel.load(path) for role, path in paths.items() if path}
    dataset = load_data_for_model(config.data, given["original"]) if "original" in given else load_dataset(config.data)
    splits = make_splits(dataset.labels, config.split_seed, config.member_fraction)
    spec = _forget_spec(config)
    task = ForgetTask.from_spec(dataset, splits, spec)
    stand_in = given.get("original") or untrained_model(dataset, TrainConfig(), device="cpu")
    for role, model in {"original": stand_in, **given}.items():
        task.check_model(model, f"the audit's {role} model")
        for attack in attacks:
            attack.check(model)
        if role in given:
            check_provenance(DiffusionModel.read_metadata(paths[role]), paths[role], dataset, splits,
                             allow_other_data=config.allow_other_data)
    for method in (unlearner, retrain):
        if method is not None:
            method.check(task, stand_in)

    if "original" in given:
        original, sources = given["original"], {"original": {"source": config.model}}
    else:
        original, directory, trained = load_or_train_reference(dataset, splits, TrainConfig(), quiet=config.quiet)
        sources = {"original": {"source": f"built-in reference ({directory})", "trained_now": trained}}
    models = {"original": original}
    judge = load_or_train_judge(dataset)
    if "unlearned" in given:
        models["unlearned"] = given["unlearned"]
        sources["unlearned"] = {"source": config.unlearned}
        unlearning = _recorded_unlearning(DiffusionModel.read_metadata(config.unlearned))
    else:
        result = unlearner.unlearn(original, task, seed=config.seed, quiet=config.quiet)
        models["unlearned"] = result.model
        sources["unlearned"] = {"source": f"{result.method} run in this audit"}
        unlearning = {"method": result.method, "params": result.params, "steps": result.steps,
                      "seconds": result.seconds, "curves": result.curves}
    if "retrained" in given:
        models["retrained"] = given["retrained"]
        sources["retrained"] = {"source": config.retrained}
    elif retrain is not None:
        models["retrained"], sources["retrained"] = _retrained_model(retrain, original, task,
                                                                     (dataset, splits, spec), config)
    for role, model in models.items():
        sources[role]["fingerprint"] = model.fingerprint()
    return AuditSubjects(dataset, splits, spec, task, attacks, judge, models, sources, unlearning)


def _membership(subjects: AuditSubjects, config: AuditConfig, out: Path) -> dict:
    """Every MIA on every model: forget set (members) vs heldout non-members of the same classes."""
    forget = subjects.task.forget
    heldout = subjects.dataset.select(subjects.spec.heldout_ids(subjects.dataset.labels, subjects.splits))
    both = LabeledImages(torch.cat([forget.images, heldout.images]), torch.cat([forget.labels, heldout.labels]),
                         torch.cat([forget.ids, heldout.ids]))
    is_member = np.r_[np.ones(len(forget), bool), np.zeros(len(heldout), bool)]
    results: dict = {}
    (out / "scores").mkdir(exist_ok=True)
    for attack in subjects.attacks:
        scored = {role: attack.score(model, both, seed=config.seed) for role, model in subjects.models.items()}
        results[attack.name] = {}
        for role, scores in scored.items():
            metrics = membership_metrics(scores.scores[is_member], scores.scores[~is_member], seed=config.seed)
            results[attack.name][role] = {**metrics, "cost": scores.to_dict()}
            logger.info("%s on %s: AUC %.3f", attack.name, role, metrics["auc"])
        write_scores_csv(out / "scores" / f"{attack.name}.csv", scored, is_member)
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
    with atomic_output_dir(config.out, config.force, config.input_paths()) as out:
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
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config.to_dict(),
            "forget_spec": subjects.spec.to_dict(),
            "data": {"name": subjects.dataset.name, "fingerprint": subjects.dataset.fingerprint(),
                     "class_names": list(subjects.dataset.class_names), "splits": subjects.splits.to_dict(),
                     "num_forget": len(subjects.task.forget), "num_retain": len(subjects.task.retain),
                     "num_heldout": len(subjects.spec.heldout_ids(subjects.dataset.labels, subjects.splits))},
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
