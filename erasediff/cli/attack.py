"""``erasediff attack``: run membership-inference attacks on a model, members (or the forget set) vs heldout."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from attacks import ATTACKS, CalibrationSet
from attacks.base import write_scores_csv
from attacks.metrics import membership_metrics, tpr_key
from diffusion.data import data_folder
from diffusion.errors import UsageError
from diffusion.io import atomic_output_dir, check_output_dir, write_json
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.provenance import check_provenance, load_data_for_model
from diffusion.splits import ForgetSpec, calibration_ids, read_sample_ids

from .common import (
    configure_logging,
    handle_errors,
    model_data_options,
    model_split,
    on_main_process,
    out_option,
    quiet_option,
    seed_option,
    threads_option,
)

logger = logging.getLogger(__name__)


@click.command("attack")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="The model to attack: a diffusers DDPM pipeline folder (e.g. written by 'erasediff train').")
@click.option("--attacks", "attack_names", default=None,
              help=f"Comma-separated attacks, from: {', '.join(ATTACKS)}  [default: every one that serves the model: "
                   "clid scores text-to-image models only].")
@click.option("--forget-class", "forget_classes", type=int, multiple=True,
              help="Score the members of this class (repeatable) against the heldout images of the same class.")
@click.option("--forget-ids", type=click.Path(), default=None,
              help="Text file of member sample ids to score against heldout images of their classes.")
@model_data_options
@out_option()
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per batch (scores do not depend on it).")
@click.option("--calibration-images", type=click.IntRange(min=0), default=100, show_default=True,
              help="Members and heldout images set aside (never scored) on which each attack fits its timesteps; "
                   "0 = the attacks' fixed paper defaults.")
@seed_option
@quiet_option
@threads_option
@handle_errors
def attack_command(model_dir: Path, attack_names, forget_classes, forget_ids, data, split_seed, member_fraction,
                   members, heldout, allow_other_data, out: Path, force, batch_size, calibration_images, seed, quiet):
    """Score every sample with membership-inference attacks and measure how well the scores separate members.

    Without --forget-class / --forget-ids all training members are scored against all heldout images. Writes
    scores/<attack>.csv (sample_id, split, is_member, model, score), metrics.json (per attack: AUC with a bootstrap
    interval, TPR at 1% and 0.1% FPR, calibrated thresholds, tests, ROC, cost, what it fitted) and run.json (what
    was scored, and the calibration images). Calibration images come from members and heldout images not scored
    first, then from the scored ones.
    """
    configure_logging(quiet)
    inputs = {"input model": model_dir, "data folder": data_folder(data), "forget-ids file": forget_ids,
              "members": members, "heldout images": heldout}
    check_output_dir(out, force, inputs)
    names = ATTACKS.parse_names(attack_names, "--attacks") if attack_names is not None else None
    model = load_model(model_dir)
    names = names or [name for name in ATTACKS if model.conditioning in ATTACKS[name].conditionings]
    attacks = [ATTACKS.make(name, batch_size=batch_size) for name in names]
    for attack in attacks:
        attack.check(model)
    dataset = load_data_for_model(data, model)
    metadata = DiffusionModel.read_metadata(model_dir) if Path(model_dir).is_dir() else {}
    splits = model_split(metadata, str(model_dir), dataset, data, split_seed, member_fraction, members, heldout)
    check_provenance(metadata, str(model_dir), dataset, splits, allow_other_data=allow_other_data)
    spec = None
    if forget_classes or forget_ids:
        spec = ForgetSpec(classes=forget_classes, sample_ids=read_sample_ids(forget_ids) if forget_ids else ())
        spec.validate(dataset.labels, splits, dataset.num_classes)
        member_ids, nonmember_ids = spec.forget_ids(dataset.labels, splits), spec.heldout_ids(dataset.labels, splits)
    else:
        member_ids, nonmember_ids = splits.members, splits.heldout
    # a text model scores (image, caption) pairs
    calibration, view = None, model.data_view(dataset, seed)
    if calibration_images:
        picked = calibration_ids((np.setdiff1d(splits.members, member_ids), member_ids),
                                 (np.setdiff1d(splits.heldout, nonmember_ids), nonmember_ids), calibration_images, seed)
        member_ids, nonmember_ids = np.setdiff1d(member_ids, picked[0]), np.setdiff1d(nonmember_ids, picked[1])
        if not len(member_ids) or not len(nonmember_ids):
            raise UsageError(f"--calibration-images {calibration_images} leaves no member or no heldout image to "
                             "score; lower it (0: fixed attack defaults)")
        calibration = CalibrationSet(view(dataset.select(picked[0])), view(dataset.select(picked[1])))
    elif any(attack.needs_fit for attack in attacks):
        raise UsageError(f"attack(s) {', '.join(a.name for a in attacks if a.needs_fit)} learn from a calibration "
                         "set; give --calibration-images > 0")
    samples = view(dataset.select(np.concatenate([member_ids, nonmember_ids])))
    is_member = np.r_[np.ones(len(member_ids), bool), np.zeros(len(nonmember_ids), bool)]
    member_split = "forget" if spec else "member"

    results, metrics = {}, {}
    for attack in attacks:
        if calibration is not None:
            attack.fit(model, calibration, seed=seed, quiet=quiet)
        scored = attack.score(model, samples, seed=seed, quiet=quiet)
        results[attack.name] = scored
        metrics[attack.name] = {
            **membership_metrics(scored.scores[is_member], scored.scores[~is_member], seed=seed),
            **scored.to_dict(),
        }
        logger.info("%s: AUC %.3f, TPR@1%%FPR %.3f, %.1f s", attack.name, metrics[attack.name]["auc"],
                    metrics[attack.name][tpr_key(0.01)], scored.seconds)

    def write() -> None:
        with atomic_output_dir(out, force, inputs) as tmp:
            (tmp / "scores").mkdir()
            for name, scored in results.items():
                write_scores_csv(tmp / "scores" / f"{name}.csv", [("model", "label", scored, None)], is_member,
                                 member_split)
            write_json(tmp / "metrics.json", metrics)
            write_json(tmp / "run.json", {
                "model": str(model_dir),
                "model_fingerprint": model.fingerprint(),
                "data": dataset.name,
                "splits": splits.to_dict(),
                "forget": spec.to_dict() if spec else None,
                "num_members": len(member_ids),
                "num_nonmembers": len(nonmember_ids),
                "calibration": calibration.summary() if calibration is not None else None,
                "seed": seed,
                "attacks": list(results),
            })
        for name, entry in metrics.items():
            low, high = entry["auc_ci"]
            click.echo(f"{name:6s} AUC {entry['auc']:.3f} [{low:.3f}, {high:.3f}]  "
                       f"TPR@1%FPR {entry[tpr_key(0.01)]:.3f}  {entry['calls_per_sample']:.0f} calls/sample  "
                       f"{entry['seconds']:.1f} s")
        click.echo(f"scores and metrics written to {out}")

    on_main_process(write)  # the scores are complete on every process; one writes them
