"""One audit run: original vs unlearned (vs retrained) model, every probe on each, checks, verdict, files.

The output folder holds ``results.json`` (schema below), ``scores/<attack>.csv`` (one row per sample and
model), ``images/*.png`` (sample grids, extraction pairs, resurrection samples) and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from attacks import ATTACKS, Attack, CalibrationSet
from diffusion.cache import cache_entry, load_or_build_model
from diffusion.canaries import canary_split, check_model_commitment, read_canaries
from diffusion.concepts import concept_spec
from diffusion.data import ImageDataset, LabeledImages, load_dataset
from diffusion.environment import environment_info, use_threads
from diffusion.erasures import cumulative_spec, erasure_history
from diffusion.errors import UsageError
from diffusion.io import as_json, atomic_output_dir, write_json
from diffusion.judge import load_or_train_judge
from diffusion.loading import load_model
from diffusion.model import DiffusionModel, model_location
from diffusion.presets import RECIPE_PRESETS
from diffusion.provenance import check_provenance, load_data_for_model, require_member_split
from diffusion.quality import generate_per_class
from diffusion.recipe import Recipe
from diffusion.reference import load_or_train_reference, recipe_key, untrained_model
from diffusion.seeding import derive_seed
from diffusion.splits import (
    ForgetSpec,
    ForgetTask,
    Splits,
    calibration_ids,
    forget_file_ids,
    member_split,
    read_sample_ids,
)
from diffusion.training import TrainConfig, process_state
from reports.results import SCHEMA_VERSION, AuditResults, Check, PairedDifference
from unlearn import METHODS, Unlearner

from . import statistics
from .checks import evaluate_checks, verdict
from .config import AuditConfig, Thresholds, read_yaml
from .images import save_grid
from .membership import ScoredSets, exposed_forget_images, run_membership
from .probes import PROBES
from .references import ReferenceCheck, check_reference
from .seed_spread import priors_for, task_kind
from .subjects import INVERSION_IMAGES_PER_CLASS, AuditSubjects

logger = logging.getLogger(__name__)

REFERENCE = "reference"  # reference roles: reference_1 .. reference_K
MIN_CALIBRATION_IMAGES = 10  # fewer members or non-members than this cannot rank a grid of choices


def _forget_spec(config: AuditConfig, dataset: ImageDataset, splits: Splits,
                 canary_ids: tuple[int, ...] = ()) -> ForgetSpec:
    """The deletion request: the configured classes, images (by sample id or by file) or concept, the included
    canaries in the same request (so no method can treat them apart), and, for an unlearned model erased in
    sequence, every erasure of its history (:func:`sequence_erasures`): it is audited for all of them."""
    return cumulative_spec(_requested_spec(config, dataset, splits, canary_ids), sequence_erasures(config))


def sequence_erasures(config: AuditConfig) -> list[dict]:
    """Every erasure of a given unlearned model erased in sequence, its own last (oldest first); [] for a model
    erased once (the configured request is what is audited) or when the audit runs its method itself."""
    if not config.unlearned:
        return []
    location, local = model_location(config.unlearned)
    history = erasure_history(DiffusionModel.read_metadata(location) if local else {})
    return history if len(history) > 1 else []


def _requested_spec(config: AuditConfig, dataset: ImageDataset, splits: Splits,
                    canary_ids: tuple[int, ...]) -> ForgetSpec:
    """The deletion request of the configuration alone (:func:`_forget_spec`)."""
    sample_ids = set(read_sample_ids(config.forget_ids)) if config.forget_ids else set()
    if config.forget_files:
        sample_ids |= set(forget_file_ids(dataset, splits, config.forget_files, config.data))
    sample_ids = tuple(sorted(sample_ids | set(canary_ids)))
    if config.forget_concept:
        return concept_spec(config.forget_concept, dataset.class_wordings, config.anchor or "", config.forget_label,
                            sample_ids)
    return ForgetSpec(classes=tuple(config.forget_classes), sample_ids=sample_ids, label=config.forget_label)


def original_record(config: AuditConfig) -> dict | None:
    """What the given original model records (``erasediff.json``; {} for a hub model or a folder without one), None
    for the built-in one; a model that records no member split, without declared members, is refused before any
    loading (:func:`~diffusion.provenance.require_member_split`)."""
    if not config.model:
        return None
    location, local = model_location(config.model)
    record = DiffusionModel.read_metadata(location) if local else {}
    require_member_split(record, config.model, bool(config.members or config.heldout))
    return record


def reference_method(config: AuditConfig, original: DiffusionModel | None, record: dict | None,
                     preset: TrainConfig) -> tuple[Unlearner | None, str]:
    """How the audit trains its references and that in words, or (None, why none is trained).

    A recipe file, else the original's record of a fine-tune: the base fine-tuned again on the remaining data
    (unlearn/refinetune.py), or for a model trained from scratch a retrain with the recipe's settings. The project's
    own models trained from scratch (and the built-in one) retrain with the ``preset`` recipe. For a model with no
    known recipe none is trained: a reference trained any other way would not be the model that never saw the forget
    set."""
    if config.retrained:
        return None, "given"
    if not config.retrain or not config.retrain_references:
        return None, "no reference was asked for (references 0)"
    recipe = None
    if config.recipe:
        recipe = Recipe.from_mapping(read_yaml(Path(config.recipe)), f"recipe file '{config.recipe}'",
                                     original.recipe_kind)
    elif record:
        recipe = Recipe.from_record(record, config.model)
    if recipe is None:
        if record is None or "train_config" in record:
            return METHODS.make("retrain", steps=preset.steps), f"retrained from scratch ({preset.steps} steps)"
        return None, (f"model '{config.model}' records no training recipe and none was given (--recipe FILE: how it "
                      "was trained, from scratch or fine-tuned from a base; or --retrained models)")
    train = recipe.train
    if recipe.fine_tuned:
        method = METHODS.make("refinetune", base=recipe.base, base_fingerprint=recipe.base_fingerprint,
                              steps=train.steps, batch_size=train.batch_size, lr=train.lr, ema_decay=train.ema_decay,
                              lora_rank=train.lora_rank)
        return method, f"the base fine-tuned again without the forget set: {recipe.describe()}"
    method = METHODS.make("retrain", steps=train.steps, batch_size=train.batch_size, lr=train.lr)
    return method, f"retrained from scratch: {recipe.describe()}"


def _recipe(config: AuditConfig, original: DiffusionModel | None) -> TrainConfig:
    """The recipe of the built-in reference and of the retrained references: the preset's, for the kind of model
    audited (a given original's, else text when a concept is erased)."""
    kind = original.recipe_kind if original is not None else "text" if config.forget_concept else "class"
    return TrainConfig.for_kind(kind, **RECIPE_PRESETS[config.preset])


def reference_seed(seed: int, index: int) -> int:
    """The training seed of the ``index``-th retrained reference of an audit run with ``seed`` (31 bits)."""
    return derive_seed(seed, "reference", index) % 2**31


def retrained_model(
    retrain: Unlearner, original: DiffusionModel, task: ForgetTask, data: tuple[ImageDataset, Splits, ForgetSpec],
    seed: int, quiet: bool,
) -> tuple[DiffusionModel, dict]:
    """A model retrained without the forget set with training seed ``seed``, from the cache (keyed by content) or
    trained now."""
    dataset, splits, spec = data
    params = {key: value for key, value in retrain.get_params().items() if value is not None}
    payload = {"original": original.fingerprint(), "forget": spec.fingerprint(), "params": params,
               "seed": seed, "data": dataset.fingerprint(), "splits": splits.to_dict()}
    directory = cache_entry("retrained", payload)

    def build() -> tuple[DiffusionModel, dict]:
        result = retrain.unlearn(original, task, seed=seed, quiet=quiet)
        record = {"role": "retrained", "forget_spec": spec.to_dict(), "seconds": result.seconds, "seed": seed,
                  "steps": result.steps, "params": result.params, "splits": splits.to_dict(),
                  "data": {"name": dataset.name, "fingerprint": dataset.fingerprint()}}
        return result.model, record

    model, built = load_or_build_model(directory, build, "retrained reference")
    return model, {"source": str(directory), "cached": not built, "seed": seed}


def _forget_task(
    config: AuditConfig, original: DiffusionModel | None, recipe: TrainConfig
) -> tuple[ImageDataset, Splits, ForgetSpec, ForgetTask, DiffusionModel]:
    """The audit's data (checked against a given original model), splits, forget spec and task, and the original
    or, before the built-in reference is trained, an untrained model of its architecture standing in for it."""
    dataset = load_data_for_model(config.data, original) if original is not None else load_dataset(config.data)
    splits = member_split(dataset, config.data, config.split_seed, config.member_fraction, config.members,
                          config.heldout)
    included = ()
    if config.canaries:  # the original's split holds the included canaries, and the request deletes them
        if original is None:
            raise UsageError("canaries are tested on a model trained with them: give it with --model (erasediff "
                             "train --canaries)")
        splits, canaries, included_ids = canary_split(config.canaries, dataset, splits)
        check_model_commitment(DiffusionModel.read_metadata(config.model), canaries,
                               f"the original model {config.model}")
        included = tuple(included_ids.tolist())
    spec = _forget_spec(config, dataset, splits, included)
    stand_in = original or untrained_model(dataset, recipe, device="cpu")
    return dataset, splits, spec, stand_in.forget_task(dataset, splits, spec, config.seed), stand_in


def _original_model(
    config: AuditConfig, given: DiffusionModel | None, dataset: ImageDataset, splits: Splits, recipe: TrainConfig
) -> tuple[DiffusionModel, dict]:
    """The given original model, or the built-in reference (from the cache or trained now), and its source."""
    if given is not None:
        return given, {"source": config.model, "recipe": recipe_key(original_record(config))}
    original, directory, trained = load_or_train_reference(dataset, splits, recipe, quiet=config.quiet)
    return original, {"source": f"built-in reference ({directory})", "trained_now": trained,
                      "recipe": recipe_key(DiffusionModel.read_metadata(directory))}


def _check_model(
    role: str, model: DiffusionModel, path: str | None, task: ForgetTask, data: tuple[ImageDataset, Splits],
    config: AuditConfig, attacks: Sequence[Attack] = (),
) -> None:
    """A model of the audit fits the task and the attacks, and (given by ``path``) was trained on this data."""
    model.check_task(task, f"the audit's {role} model")
    for attack in attacks:
        attack.check(model)
    if path:
        check_provenance(DiffusionModel.read_metadata(path), path, *data, allow_other_data=config.allow_other_data)


def fill_reference(config: AuditConfig, index: int) -> dict:
    """Train the ``index``-th (1-based) of the audit's ``retrain_references`` models retrained without the forget
    set into the cache, or find it there: K processes or machines sharing one cache (``ERASEDIFF_CACHE``) fill an
    audit's references in parallel, and the audit then reuses them. Returns the reference's source record."""
    if not 1 <= index <= config.retrain_references:
        raise UsageError(f"reference index {index} is out of range: expected 1 to {config.retrain_references}")
    if config.retrained:
        raise UsageError("references are given (retrained); there is nothing to train")
    use_threads(config.threads)
    record = original_record(config)
    given = load_model(config.model) if config.model else None
    recipe = _recipe(config, given)
    dataset, splits, spec, task, stand_in = _forget_task(config, given, recipe)
    _check_model("original", stand_in, config.model, task, (dataset, splits), config)
    retrain, why = reference_method(config, given, record, recipe)
    if retrain is None:
        raise UsageError(f"no reference to train: {why}")
    retrain.check(task, stand_in)
    original, _ = _original_model(config, given, dataset, splits, recipe)
    _, source = retrained_model(retrain, original, task, (dataset, splits, spec),
                                 reference_seed(config.seed, index - 1), config.quiet)
    return source


def _check_references(given: dict[str, DiffusionModel], paths: dict[str, str | None], spec: ForgetSpec,
                      declared: bool) -> dict[str, ReferenceCheck]:
    """Every given reference checked to be a retrain without ``spec`` (audit/references.py), before any work."""
    seen = {f"the {role} model": given[role].fingerprint() for role in ("original", "unlearned") if role in given}
    checks = {}
    for role in (r for r in given if r.startswith(REFERENCE)):
        fingerprint = given[role].fingerprint()
        checks[role] = check_reference(paths[role], fingerprint, DiffusionModel.read_metadata(paths[role]), spec,
                                       seen, declared)
        seen[f"reference '{paths[role]}'"] = fingerprint
    return checks


def _check_sequence_start(earlier: list[dict], original: DiffusionModel, unlearned: str | None) -> None:
    """An unlearned model erased in sequence is audited against the model its first erasure started from."""
    if earlier and earlier[0].get("parent_fingerprint") != original.fingerprint():
        raise UsageError(f"the unlearned model '{unlearned}' was erased in {len(earlier)} steps starting from "
                         f"model {str(earlier[0].get('parent_fingerprint'))[:12]}, not from the original given "
                         f"({original.fingerprint()[:12]}): give the model its first erasure started from")


def _recorded_unlearning(metadata: dict) -> dict | None:
    """The unlearning record of a model given by path (``erasediff unlearn`` writes one), else None."""
    if "method" not in metadata:
        return None
    history = erasure_history(metadata)
    return {"method": metadata["method"], "params": metadata.get("params", {}), "steps": metadata.get("steps"),
            "seconds": metadata.get("wall_seconds"), "curves": metadata.get("curves", {}),
            **({"history": history} if len(history) > 1 else {})}


def _scored_sets(
    dataset: ImageDataset, splits: Splits, spec: ForgetSpec, task: ForgetTask, config: AuditConfig, view
) -> tuple[ScoredSets, LabeledImages | None, CalibrationSet | None, ScoredSets | None]:
    """The forget set and the heldout images of its classes, minus the images kept aside (never scored): a few
    heldout images per erased class for fitting an inverted class embedding (a text model: a word or a prompt),
    and the calibration set; every set as the models take it (``view``:
    :meth:`~diffusion.model.DiffusionModel.data_view`).

    Calibration: up to ``config.calibration_images`` retained members and as many heldout non-members, drawn from
    the heldout images the audit does not score (other classes) first, then from the scored ones, at most a quarter
    of them (a deletion of images of every class scores all heldout images).
    """
    heldout_ids = spec.heldout_ids(dataset.labels, splits)
    inversion = None
    if config.resurrection and spec.classes:
        labels = dataset.labels[heldout_ids].numpy()
        aside = []
        for c in spec.classes:
            ids = heldout_ids[labels == c]
            order = np.random.default_rng(derive_seed(config.seed, "inversion-aside", c) % 2**32).permutation(len(ids))
            aside += ids[order[:INVERSION_IMAGES_PER_CLASS]].tolist()
        inversion = view(dataset.select(sorted(aside)))
        heldout_ids = np.setdiff1d(heldout_ids, aside)
    calibration = None
    if config.calibration_images:
        wanted, seed = config.calibration_images, derive_seed(config.seed, "calibration") % 2**32
        unscored = np.setdiff1d(splits.heldout, spec.heldout_ids(dataset.labels, splits))
        # retained members (never scored); heldout images the audit does not score, then at most a quarter of those
        # it scores
        members, nonmembers = calibration_ids((task.retain.ids.numpy(), np.array([], np.int64)),
                                              (unscored, heldout_ids), wanted, seed, scored_share=0.25)
        if min(len(members), len(nonmembers)) < MIN_CALIBRATION_IMAGES:
            raise UsageError(f"too few images to fit the attacks on: {len(members)} retained members and "
                             f"{len(nonmembers)} spare heldout images (at least {MIN_CALIBRATION_IMAGES} of each); "
                             "set calibration_images 0 for the attacks' fixed defaults")
        heldout_ids = np.setdiff1d(heldout_ids, nonmembers)
        calibration = CalibrationSet(view(dataset.select(members)), view(dataset.select(nonmembers)))
    exposure = None
    if config.exposure_images:  # retained members and heldout images nothing else uses (scored ones as a fallback)
        used = [calibration.nonmembers.ids.numpy()] if calibration is not None else []
        used += [inversion.ids.numpy()] if inversion is not None else []
        spare = np.setdiff1d(splits.heldout, np.concatenate([heldout_ids, *used]))
        if len(spare) < MIN_CALIBRATION_IMAGES:
            spare = np.setdiff1d(splits.heldout, np.concatenate([np.array([], np.int64), *used]))
        retained = task.retain.ids.numpy()
        if calibration is not None:
            retained = np.setdiff1d(retained, calibration.members.ids.numpy())
        rng = np.random.default_rng(derive_seed(config.seed, "exposure") % 2**32)
        members, nonmembers = (np.sort(rng.permutation(pool)[:config.exposure_images]) for pool in (retained, spare))
        if min(len(members), len(nonmembers)) >= MIN_CALIBRATION_IMAGES:
            chosen = view(dataset.select(np.r_[members, nonmembers]))
            exposure = ScoredSets(chosen, np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)])
    heldout = view(dataset.select(heldout_ids))
    forget = view(dataset.select(task.forget.ids))  # a text model's under the captions it was trained on
    samples = LabeledImages(torch.cat([forget.images, heldout.images]), torch.cat([forget.labels, heldout.labels]),
                            torch.cat([forget.ids, heldout.ids]))
    is_member = np.r_[np.ones(len(forget), bool), np.zeros(len(heldout), bool)]
    classes = dataset.labels[samples.ids] if samples.labels.ndim == 2 else None
    sets = ScoredSets(samples, is_member, class_labels=classes)
    return sets, inversion, calibration, exposure


def prepare_subjects(config: AuditConfig) -> AuditSubjects:
    """Check everything first, then load or build every model under audit.

    Every user mistake (a method or attack parameter, a forget spec, a model that does not fit the data or the
    attacks) surfaces before any training: the built-in reference is checked through an untrained model of its
    architecture.
    """
    attacks = [ATTACKS.make(name) for name in config.attacks]
    unlearner = METHODS.make(config.method, **config.method_params) if config.unlearned is None else None
    paths = {"original": config.model, "unlearned": config.unlearned}
    paths.update({f"{REFERENCE}_{k + 1}": path for k, path in enumerate(config.retrained)})
    record = original_record(config)
    given = {role: load_model(path) for role, path in paths.items() if path}
    earlier = sequence_erasures(config)
    if "original" in given:
        _check_sequence_start(earlier, given["original"], config.unlearned)
    recipe = _recipe(config, given.get("original"))
    retrain, how = reference_method(config, given.get("original"), record, recipe)
    dataset, splits, spec, task, stand_in = _forget_task(config, given.get("original"), recipe)
    for role, model in {"original": stand_in, **given}.items():
        _check_model(role, model, paths[role] if role in given else None, task, (dataset, splits), config, attacks)
    reference_checks = _check_references(given, paths, spec, config.unverified_references)
    if config.canaries and "unlearned" in given:  # erased from the model trained with these canaries
        check_model_commitment(DiffusionModel.read_metadata(config.unlearned), read_canaries(config.canaries),
                               f"the unlearned model {config.unlearned}")
    sets, inversion_images, calibration, exposure = _scored_sets(dataset, splits, spec, task, config,
                                                       stand_in.data_view(dataset, config.seed))
    if calibration is None and any(attack.needs_fit for attack in attacks):
        needing = ", ".join(attack.name for attack in attacks if attack.needs_fit)
        raise UsageError(f"attack(s) {needing} learn from a calibration set; set calibration_images > 0")
    if calibration is not None:  # non-members the audit never scores, for methods that match to them
        task = replace(task, nonmembers=calibration.nonmembers)
    for method in (unlearner, retrain):
        if method is not None:
            method.check(task, stand_in)

    original, sources = _original_model(config, given.get("original"), dataset, splits, recipe)
    if "original" not in given:  # the built-in original, known now
        _check_sequence_start(earlier, original, config.unlearned)
    sources = {"original": sources}
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
    references = [role for role in given if role.startswith(REFERENCE)]
    for role in references:
        models[role], sources[role] = given[role], {"source": paths[role], **reference_checks[role].to_dict()}
    if retrain is not None:
        for k in range(config.retrain_references):
            role = f"{REFERENCE}_{k + 1}"
            models[role], sources[role] = retrained_model(retrain, original, task, (dataset, splits, spec),
                                                           reference_seed(config.seed, k), config.quiet)
            sources[role]["how"] = how
            references.append(role)
    for role, model in models.items():
        sources[role]["fingerprint"] = model.fingerprint()
    return AuditSubjects(dataset, splits, spec, task, attacks, judge, models, references, sources, unlearning, sets,
                         inversion_images, calibration, None if references else how, exposure)


GenerationMemo = dict[str, tuple[dict, dict[str, dict], dict[str, tuple[str, bytes]]]]


def _memo_key(role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
              probes: Sequence[str]) -> str:
    """What one model's generation results depend on: the model's weights, its role (image names), the task's
    images, the probes run and every setting that reaches a sampler, a judge or a probe."""
    ignored = {"model", "unlearned", "retrained", "unverified_references", "retrain", "retrain_references", "method",
               "method_params", "attacks", "calibration_images", "thresholds", "out", "force", "quiet", "threads"}
    parts = {"role": role, "model": model.fingerprint(), "probes": list(probes),
             "data": subjects.dataset.fingerprint(),
             "forget": subjects.task.forget.ids.tolist(), "spec": subjects.spec.to_dict(),
             "inversion": None if subjects.inversion_images is None else subjects.inversion_images.ids.tolist(),
             "judge": {k: v for k, v in subjects.judge.record.items() if k != "test_ids"},
             "config": {k: v for k, v in config.to_dict().items() if k not in ignored}}
    return hashlib.sha256(json.dumps(as_json(parts), sort_keys=True).encode()).hexdigest()


def model_generation(subjects: AuditSubjects, config: AuditConfig, images_dir: Path,
                     memo: GenerationMemo | None = None, probes: Sequence[str] | None = None
                     ) -> tuple[dict, dict, dict]:
    """Utility and the probes (audit/probes/; ``probes`` names a subset, default every registered one) on every
    model, with the images the report shows: (utility by role, each probe's sections by role, image key -> file
    name).

    ``memo`` (optional, owned by the caller) keeps each model's results across audits in one process, keyed by
    everything they depend on (:func:`_memo_key`): audits of several candidates against the same original and
    references (benchmarks/controls.py, :class:`audit.probe.AuditProbe`) compute the fixed models' results once."""
    names = list(PROBES) if probes is None else list(probes)
    utility, sections_by_probe, images = {}, {name: {} for name in names}, {}
    for role, model in subjects.models.items():
        key = _memo_key(role, model, subjects, config, names) if memo is not None else None
        if key is not None and key in memo:
            utility[role], sections, files = memo[key]
            for name, (file_name, data) in files.items():
                (images_dir / file_name).write_bytes(data)
                images[name] = file_name
        else:
            utility[role], sections, shown = _model_generation(role, model, subjects, config, images_dir, names)
            images.update(shown)
            if key is not None:
                memo[key] = (utility[role], sections,
                             {name: (f, (images_dir / f).read_bytes()) for name, f in shown.items()})
        for name, section in sections.items():
            sections_by_probe[name][role] = section
    return utility, sections_by_probe, images


def _model_generation(role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
                      images_dir: Path, probes: Sequence[str]) -> tuple[dict, dict[str, dict], dict[str, str]]:
    """One model's generation results: (utility, its section of each of ``probes`` that applies, image key -> file
    name)."""
    images, sections = {}, {}
    utility = subjects.utility(model, config)
    for kind, show in {"forgotten": subjects.forgotten_classes(),
                       "retained": subjects.task.retained_classes[:4]}.items():
        grid, _ = generate_per_class(model, show, 8, seed=config.seed, steps=config.eval_steps,
                                     wordings=subjects.dataset.class_wordings)
        images[f"{role}_{kind}"] = save_grid(grid, images_dir / f"{role}_{kind}.png", columns=8).name
    for name in probes:
        probe = PROBES.make(name)
        if probe.applies(subjects, config):
            sections[name], shown = probe.run(role, model, subjects, config, images_dir)
            images.update(shown)
    return utility, sections, images


def residual_leakage(membership: dict) -> dict:
    """Per conditioning, the share of the original's membership signal that remains in the unlearned model,
    (unlearned - references) / (original - references), for every attack and for their mean (None where the
    original shows no signal to take a share of)."""
    return {conditioning: {"mean": combined.get("residual_fraction"),
                           **{attack: per[conditioning].get("residual_fraction")
                              for attack, per in membership["attacks"].items()}}
            for conditioning, combined in membership["combined"].items()}


def _percent(fraction: dict) -> str:
    return f"{fraction['estimate']:.0%} [{fraction['low']:.0%}, {fraction['high']:.0%}]"


def power_statement(membership: dict, checks: list[Check], verdict_text: str, thresholds: Thresholds,
                    max_forget: int, unverified: list[str], without_references: str | None = None) -> dict:
    """What was certified, at what confidence, against how many references, how much of the original's signal
    remains, and what would turn an INCONCLUSIVE membership check into an answer (a number of forget images the
    data can hold, up to ``max_forget``, or a number of references), and which references (``unverified``) only the
    user vouches for: the report's header, in plain words. ``without_references``: why the audit had none (its
    verdict then says, first, what it does not prove)."""
    n, margin = membership["num_forget"], thresholds.mia_auc_margin
    has_power = any(c.name == "audit_power" and c.decision == "PASS" for c in checks)
    spread = membership["seed_spread"]
    if without_references:
        seeds = (f"a measured spread of {spread['dof']} degrees of freedom" if spread["dof"]
                 else "not counted: no retrain and no measured spread")
        text = (f"{verdict_text} WITHOUT RETRAINED REFERENCES ({without_references}). {len(membership['attacks'])} "
                f"membership attack(s), each scored on {n} forget and {membership['num_heldout']} heldout images, "
                f"compared the unlearned model with chance (AUC 0.5: the forget images scored as the heldout ones) at "
                f"{thresholds.confidence:.0%} confidence with a margin of +/-{margin:g} AUC on the mean over attacks; "
                f"the intervals count the images, the seeds {seeds}. What this does not prove: that the model is the "
                "one that never saw the forget set. Without a retrain, whatever a retrain would also show (its "
                "generation of the erased class, its resurrection and relearning) has no target, so those checks are "
                "not made, and an attack weaker than this audit's may pass where a stronger one would not.")
    else:
        seeds = (f"a measured spread of {spread['dof']} degrees of freedom pooled with the references'"
                 if spread["dof"] else "the references' spread alone")
        text = (f"{verdict_text}: {len(membership['attacks'])} membership attack(s), each scored on {n} forget and "
                f"{membership['num_heldout']} heldout images, compared the unlearned model with "
                f"{len(membership['references'])} model(s) retrained without the forget set at "
                f"{thresholds.confidence:.0%} confidence (two one-sided tests) with a margin of +/-{margin:g} AUC on "
                f"the mean over attacks; the intervals count the images and the retrains' seeds ({seeds}).")
    leakage = residual_leakage(membership)
    shares = [f"{conditioning}: {_percent(per['mean'])}" for conditioning, per in leakage.items() if per["mean"]]
    if shares:
        text += f" Share of the original's membership signal that remains (mean over attacks): {'; '.join(shares)}."
    if unverified:
        text += (f" {len(unverified)} reference(s) ({', '.join(unverified)}) were declared by the user as retrained "
                 "without the forget set and could not be verified from their records: the verdict holds only if "
                 "they were.")
    if not has_power:
        text += " The attacks could not tell the original model from the references, so this audit cannot certify."
    advice = []
    for conditioning, combined in membership["combined"].items():
        if combined["decision"] != "INCONCLUSIVE" or "unlearned" not in combined:
            continue
        diff = PairedDifference.from_json(combined["unlearned"])
        would = statistics.what_would_decide(diff, margin, max_forget)
        options = []
        if would["forget_images"] is not None:
            options.append(f"about {would['forget_images']} forget images (the data holds {max_forget})")
        if not without_references and would["references"] is not None and (
                would["references"] > len(diff.reference_values)):
            options.append(f"{would['references']} references")
        if options:
            advice.append(f"under {conditioning}, {' or '.join(options)} would likely give a {would['outcome']} "
                          "(estimate held fixed)")
        elif would["outcome"] == "FAIL":
            advice.append(f"under {conditioning}, the estimate {diff.estimate:+.3f} lies beyond +/-{margin:g}, but no "
                          "feasible number of forget images or of references (up to 16) makes that a decisive FAIL")
        elif would["outcome"] == "PASS":
            advice.append(f"under {conditioning}, no feasible number of forget images or of references (up to 16) "
                          f"certifies a difference of {diff.estimate:+.3f} at +/-{margin:g}: a larger forget set "
                          "(several classes) or a wider margin, stated, would")
        else:
            advice.append(f"under {conditioning}, the difference sits on the margin: nothing decides it")
    if advice:
        joined = "; ".join(advice)
        text += f" {joined[0].upper()}{joined[1:]}."
    return {"statement": text, "has_power": has_power, "residual_leakage": leakage,
            "would_decide": advice, "without_references": without_references}


@dataclass
class Examination:
    """What the audit's attacks and probes found on its models, and the checks decided on it.

    Attributes:
        sections: the measured sections of the results document (``forget_spec``, ``membership``, ``attacks``,
            ``utility``, one per probe run, ``images``).
        checks: every check decided on them (:func:`audit.checks.evaluate_checks`).
        thresholds: the thresholds they were decided at (the configured ones for the kind of task).
        seconds: ``attacks_seconds`` and ``generation_seconds``.
    """

    sections: dict
    checks: list[Check]
    thresholds: Thresholds
    seconds: dict[str, float]


def examine(subjects: AuditSubjects, config: AuditConfig, scores_dir: Path, images_dir: Path,
            scores_memo: dict | None = None, generation_memo: GenerationMemo | None = None,
            probes: Sequence[str] | None = None) -> Examination:
    """Every membership attack (fitted already) and every probe (``probes``: a subset of the registered ones, by
    name) on every model of ``subjects``, and the checks: the audit's one loop. The score tables go to
    ``scores_dir``, the images to ``images_dir``.

    ``run_audit`` examines its models once; :class:`audit.probe.AuditProbe` once per candidate unlearned model,
    keeping the fixed models' attack scores (``scores_memo``, :func:`audit.membership.run_membership`) and
    generation results (``generation_memo``, :func:`model_generation`) between candidates."""
    started = time.perf_counter()
    inversions = {role: inversion for role, model in subjects.models.items()
                  if (inversion := subjects.inversion(model, config)) is not None}
    spec = subjects.spec
    thresholds = config.thresholds.for_task(bool(spec.classes))
    priors = priors_for(subjects.models["original"].fingerprint(),
                        task_kind(spec.classes, spec.sample_ids, bool(spec.concept)), subjects.sets.num_members,
                        recipe=subjects.sources["original"].get("recipe"),
                        exposure_images=subjects.exposure.num_members if subjects.exposure is not None else 0)
    attacks, comparisons, combined = run_membership(
        subjects.attacks, subjects.models, inversions, subjects.sets, subjects.references, thresholds,
        config.seed, scores_dir, memo=scores_memo, priors=priors)
    exposed = exposed_forget_images(comparisons, subjects.sets)
    images = {}
    if exposed:
        pictures = subjects.dataset.select([row["sample_id"] for row in exposed]).images
        images["exposed"] = save_grid(pictures, images_dir / "exposed.png", columns=len(exposed)).name
    attacked = time.perf_counter()
    utility, probe_sections, generated = model_generation(subjects, config, images_dir, generation_memo, probes)
    declared = AuditResults.__dataclass_fields__  # a section the results tree declares is always written
    probe_sections = {name: by_role for name, by_role in probe_sections.items() if by_role or name in declared}
    images.update(generated)
    sets = subjects.sets
    membership = {
        "references": subjects.references,
        "conditionings": list(next(iter(comparisons.values()))) if comparisons else [],
        "num_forget": sets.num_members,
        "num_heldout": sets.num_nonmembers,
        "inversion_image_ids": ([] if subjects.inversion_images is None
                                else subjects.inversion_images.ids.tolist()),
        "calibration": None if subjects.calibration is None else {
            **subjects.calibration.summary(), "fitted_on": "original",
            "attacks": {attack.name: {k: v for k, v in attack.calibration_.items() if not k.endswith("_ids")}
                        for attack in subjects.attacks}},
        "confidence": thresholds.confidence,
        "margin": thresholds.mia_auc_margin,
        "seed_spread": priors.describe(),
        "attacks": comparisons,
        "combined": combined,
        "exposed_forget_images": exposed,
    }
    sections = {"forget_spec": subjects.spec.to_dict(), "membership": membership, "attacks": attacks,
                "utility": utility, **probe_sections, "images": images}
    return Examination(sections, evaluate_checks(sections, thresholds), thresholds,
                       {"attacks_seconds": attacked - started, "generation_seconds": time.perf_counter() - attacked})


@contextmanager
def _output_dir(config: AuditConfig) -> Iterator[Path]:
    """The audit's output folder, written atomically by the main process; the other processes of an Accelerate
    launch (which share the unlearning, training and attack scoring) write the same files to a scratch folder."""
    if process_state().is_main_process:
        with atomic_output_dir(config.out, config.force, config.input_paths()) as out:
            yield out
    else:
        with tempfile.TemporaryDirectory(prefix="erasediff-audit-") as scratch:
            yield Path(scratch)


def run_audit(config: AuditConfig, render: Callable[[Path], object] | None = None,
              memo: GenerationMemo | None = None) -> AuditResults:
    """Run the whole audit and write the output folder atomically; returns the results (the typed tree of
    ``results.json``: the document is built into it before it is written, so what is written parses).

    ``render`` (the command line passes :func:`reports.write_report`) is called with the path of ``results.json``
    before the folder is published, so a report is part of the same atomic write. ``memo``: see
    :func:`model_generation`.
    """
    started = time.perf_counter()
    use_threads(config.threads)
    with _output_dir(config) as out:
        subjects = prepare_subjects(config)
        prepared = time.perf_counter()
        images_dir = out / "images"
        images_dir.mkdir()
        (out / "scores").mkdir()
        if subjects.calibration is not None:
            for attack in subjects.attacks:
                attack.fit(subjects.models["original"], subjects.calibration, seed=config.seed, quiet=config.quiet)
        fitted = time.perf_counter()
        examined = examine(subjects, config, out / "scores", images_dir, generation_memo=memo)
        spec, sets, thresholds = subjects.spec, subjects.sets, examined.thresholds
        results = {
            "schema_version": SCHEMA_VERSION,
            "verdict": None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config.to_dict(),
            "forget_spec": subjects.spec.to_dict(),
            "data": {"name": subjects.dataset.name, "fingerprint": subjects.dataset.fingerprint(),
                     "class_names": list(subjects.dataset.class_names), "splits": subjects.splits.to_dict(),
                     "num_forget": len(subjects.task.forget), "num_retain": len(subjects.task.retain),
                     "num_heldout": sets.num_nonmembers},
            "environment": {**environment_info(), "seed": config.seed},
            "judge": {k: v for k, v in subjects.judge.record.items() if k != "test_ids"},
            "models": subjects.sources,
            "unlearning": subjects.unlearning,
            **examined.sections,
        }
        checks = examined.checks
        results["checks"] = [c.to_json() for c in checks]
        results["verdict"] = verdict(checks)
        max_forget = (len(subjects.task.forget) if spec.classes or spec.concept
                      else len(subjects.splits.members) - config.calibration_images)
        unverified = [role for role, source in subjects.sources.items() if source.get("verified") is False]
        results["power"] = power_statement(results["membership"], checks, results["verdict"], thresholds,
                                           max_forget, unverified, subjects.without_references)
        results["timings"] = {"prepare_seconds": prepared - started,
                              "attacks_seconds": fitted - prepared + examined.seconds["attacks_seconds"],
                              "generation_seconds": examined.seconds["generation_seconds"],
                              "total_seconds": time.perf_counter() - started}
        typed = AuditResults.from_json(as_json(results))
        write_json(out / "results.json", typed.to_json())
        if render is not None:
            render(out / "results.json")
    return typed
