"""``erasediff unlearn``: erase a forget set (classes and/or member images) from a saved model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch
import yaml

from audit.config import read_yaml_value
from diffusion.canaries import canary_split, check_model_commitment
from diffusion.captions import ClassCaptions
from diffusion.concepts import concept_spec, read_prompts
from diffusion.data import data_folder
from diffusion.environment import environment_info
from diffusion.erasures import erased_member_ids, erasure_history
from diffusion.errors import RunError, UsageError
from diffusion.io import check_output_dir
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.provenance import check_provenance, load_data_for_model
from diffusion.splits import ForgetSpec, forget_file_ids, read_sample_ids
from diffusion.training import MIXED_PRECISIONS
from unlearn import METHODS

from .common import (
    canaries_option,
    configure_logging,
    handle_errors,
    model_data_options,
    model_split,
    out_option,
    quiet_option,
    save_model_once,
    seed_option,
    threads_option,
)


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs to a dict; values are read as YAML scalars, as a config file reads them (``1e-4`` ->
    float, ``null`` -> None)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE; got '{pair}'")
        try:
            params[key.replace("-", "_")] = read_yaml_value(value)
        except yaml.YAMLError as error:
            raise UsageError(f"--param {key}: cannot read the value '{value}': {str(error).splitlines()[0]}") from None
    return params


def forget_spec_from_options(
    forget_classes: tuple[int, ...], forget_ids: str | None, label: str, wordings: ClassCaptions,
    concept: tuple[str, ...] = (), prompts_file: str | None = None, anchor: str | None = None,
    more_ids: tuple[int, ...] = (),
) -> ForgetSpec:
    """The :class:`ForgetSpec` given by ``--forget-class`` (repeatable) and ``--forget-ids FILE``, or for a text
    model by ``--forget-concept TEXT`` (repeatable), ``--forget-prompts FILE`` and ``--anchor TEXT`` (naming a
    class as the data's captions ``wordings`` do); ``more_ids`` (the included canaries, the images named by file)
    are deleted with it."""
    sample_ids = read_sample_ids(forget_ids) if forget_ids else ()
    sample_ids = tuple(sorted({*sample_ids, *more_ids})) if more_ids else sample_ids
    prompts = tuple(concept) + (read_prompts(prompts_file) if prompts_file else ())
    if prompts or concept or prompts_file is not None:
        if forget_classes:
            raise UsageError("give --forget-concept (a text-to-image model) or --forget-class (a class-conditional "
                             "one), not both")
        return concept_spec(prompts, wordings, anchor or "", label, sample_ids)
    if anchor is not None:
        raise UsageError("--anchor is the prompt a concept is mapped to; it needs --forget-concept")
    return ForgetSpec(classes=forget_classes, sample_ids=sample_ids, label=label)


def concept_options(command):
    """``--forget-concept``, ``--forget-prompts`` and ``--anchor``: what a text-to-image model erases."""
    options = [
        click.option("--forget-concept", "concept", multiple=True,
                     help="Text-to-image models: a prompt naming the concept to erase (repeatable)."),
        click.option("--forget-prompts", "prompts_file", type=str, default=None,
                     help="Text-to-image models: a text file of concept prompts, one per line."),
        click.option("--anchor", type=str, default=None,
                     help="Text-to-image models: the prompt the concept is mapped to (default: the empty prompt)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("unlearn")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="The trained model folder (diffusers format); it is never modified.")
@click.option("--method", default="erasediff", show_default=True,
              help=f"Unlearning method: {', '.join(METHODS)}.")
@click.option("--forget-class", "forget_classes", type=int, multiple=True,
              help="A class to erase entirely (repeatable).")
@click.option("--forget-ids", type=str, default=None,
              help="A text file of member sample ids to erase (a deletion request of specific images).")
@click.option("--forget-files", type=click.Path(path_type=Path), default=None,
              help="The forget set by file: a list of image paths under --data (one per line) or a folder inside it.")
@click.option("--forget-label", default="", help="A description of the deletion request, kept in the record.")
@concept_options
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the method's).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the method's).")
@click.option("--batch-size", type=int, default=None, help="Images per batch (default: the method's).")
@click.option("--lambda", "fixed_lambda", type=float, default=None,
              help="EraseDiff: a fixed lambda instead of BOME's adaptive rule.")
@click.option("--forget-target", type=str, default=None,
              help="EraseDiff: 'relabel' (default) or 'uniform' ('match' needs non-member images, which only the "
                   "audit gives: its calibration split's).")
@click.option("--param", "extra", multiple=True, metavar="KEY=VALUE",
              help="Any other method parameter, e.g. --param inner_steps=3 (repeatable).")
@click.option("--mixed-precision", type=click.Choice(MIXED_PRECISIONS), default="no", show_default=True,
              help="Compute the unlearning steps in bfloat16 (weights and optimizer state stay float32).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass: less memory for a large UNet, slower steps.")
@model_data_options
@canaries_option
@out_option()
@seed_option
@quiet_option
@threads_option
@handle_errors
def unlearn_command(model_dir: Path, method, forget_classes, forget_ids, forget_files, forget_label, concept,
                    prompts_file, anchor, steps, lr, batch_size,
                    fixed_lambda, forget_target, extra, mixed_precision, gradient_checkpointing, data, split_seed,
                    member_fraction, members, heldout, allow_other_data, canary_dir, out: Path, force, seed, quiet):
    """Erase a forget set from a model and save the unlearned model with a record of how it was made.

    The output folder holds a diffusers model and erasediff.json: method, parameters, the forget spec and its
    fingerprint, the parent model's fingerprint, steps, wall seconds and the loss curves.
    """
    configure_logging(quiet)
    inputs = {"input model": model_dir, "data folder": data_folder(data), "forget-ids file": forget_ids,
              "forget files": forget_files, "members": members, "heldout images": heldout,
              "prompts file": prompts_file, "canary folder": canary_dir}
    check_output_dir(out, force, inputs)
    given = {"steps": steps, "lr": lr, "batch_size": batch_size, "fixed_lambda": fixed_lambda,
             "forget_target": forget_target}
    params = {key: value for key, value in given.items() if value is not None} | parse_params(extra)
    unlearner = METHODS.make(method, **params)
    metadata = DiffusionModel.read_metadata(model_dir) if Path(model_dir).is_dir() else {}
    model = load_model(model_dir)
    dataset = load_data_for_model(data, model)
    splits = model_split(metadata, str(model_dir), dataset, data, split_seed, member_fraction, members, heldout)
    canaries, included = {}, ()
    if canary_dir is not None:  # the included canaries are members, deleted with the forget set in one request
        splits, drawn, included_ids = canary_split(canary_dir, dataset, splits)
        check_model_commitment(metadata, drawn, f"the model {model_dir}")
        canaries, included = drawn.record(), tuple(included_ids.tolist())
    check_provenance(metadata, str(model_dir), dataset, splits, allow_other_data=allow_other_data)
    named = forget_file_ids(dataset, splits, str(forget_files), data) if forget_files else ()
    spec = forget_spec_from_options(forget_classes, forget_ids, forget_label, dataset.class_wordings, concept,
                                    prompts_file, anchor, (*included, *named))
    task = model.forget_task(dataset, splits, spec, seed)
    history = erasure_history(metadata)  # erasures in sequence: never train again on what an earlier one removed
    if history:
        erased = torch.from_numpy(erased_member_ids(history, np.asarray(dataset.labels), splits))
        task = replace(task, retain=task.retain.take(~torch.isin(task.retain.ids, erased)))
    unlearner.check(task, model)
    parent = model.fingerprint()
    result = unlearner.unlearn(model, task, seed=seed, quiet=quiet, mixed_precision=mixed_precision,
                               gradient_checkpointing=gradient_checkpointing)
    if model.fingerprint() != parent:
        raise RunError(f"{method} changed the input model; nothing was written")
    record = {
        "role": "unlearned",
        "method": result.method,
        "params": result.params,
        "forget_spec": spec.to_dict(),
        "num_forget": len(task.forget),
        "num_retain": len(task.retain),
        "parent_model": {"path": str(model_dir), "fingerprint": parent},
        **({"history": history} if history else {}),
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint()},
        "splits": splits.to_dict(),
        **({"canaries": canaries} if canaries else {}),
        "seed": seed,
        "mixed_precision": mixed_precision,
        "gradient_checkpointing": gradient_checkpointing,
        "steps": result.steps,
        "wall_seconds": result.seconds,
        "curves": result.curves,
        "environment": environment_info(),
    }
    save_model_once(result.model, record, out, force, inputs,
                    f"unlearned model written to {out} ({result.method}, {result.steps} steps, {result.seconds:.0f} s)")
