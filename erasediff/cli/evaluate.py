"""``erasediff evaluate``: forgetting and utility of a model, judged on generated samples."""

from __future__ import annotations

from pathlib import Path

import click

from diffusion.concepts import concept_spec
from diffusion.data import data_folder
from diffusion.errors import UsageError
from diffusion.io import check_output_file, write_json
from diffusion.judge import load_or_train_judge
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.provenance import check_provenance, load_data_for_model
from diffusion.quality import evaluate_generation

from .common import (
    allow_other_data_option,
    configure_logging,
    data_option,
    handle_errors,
    quiet_option,
    seed_option,
    threads_option,
)


@click.command("evaluate")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="The model folder (diffusers format).")
@click.option("--forget-class", "forget_classes", type=int, multiple=True,
              help="A forgotten class (repeatable); the other classes count as retained.")
@click.option("--forget-concept", "concept", multiple=True,
              help="Text-to-image models: a prompt naming the forgotten concept (its digit counts as forgotten; "
                   "every digit is prompted with held-out paraphrases).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the metrics to this JSON file.")
@click.option("--force", is_flag=True, help="Replace the --json file if it exists.")
@click.option("--per-class", type=click.IntRange(min=2), default=50, show_default=True,
              help="Generated samples per class.")
@click.option("--sample-steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="DDIM sampling steps.")
@data_option
@allow_other_data_option
@seed_option
@quiet_option
@threads_option
@handle_errors
def evaluate_command(model_dir: Path, forget_classes, concept, json_path: Path | None, force, per_class,
                     sample_steps, data, allow_other_data, seed, quiet):
    """Judge samples of every class: accuracy and entropy on the forgotten classes (forgetting), accuracy per
    retained class and the Frechet distance to real retained-class images in the judge's feature space
    (utility). The same --seed gives every model the same starting noise, so models compare sample by sample.
    """
    configure_logging(quiet)
    if json_path is not None:
        check_output_file(json_path, force, {"model folder": model_dir, "data folder": data_folder(data)}, "--json")
    if concept and forget_classes:
        raise UsageError("give --forget-concept (a text-to-image model) or --forget-class, not both")
    model = load_model(model_dir)
    model.check_request(forget_classes, concept)
    dataset = load_data_for_model(data, model)
    check_provenance(DiffusionModel.read_metadata(model_dir), str(model_dir), dataset, None,
                     allow_other_data=allow_other_data)
    if concept:
        forget_classes = concept_spec(concept, dataset.class_wordings).classes
    for c in forget_classes:
        if not 0 <= c < dataset.num_classes:
            raise UsageError(f"forget class {c} is out of range; expected a class id in 0..{dataset.num_classes - 1}")
    if len(set(forget_classes)) >= dataset.num_classes:
        raise UsageError(f"cannot treat every class ({dataset.num_classes}) as forgotten; no class would be retained")
    judge = load_or_train_judge(dataset)
    metrics = evaluate_generation(model, judge, dataset, forget_classes=sorted(set(forget_classes)),
                                  per_class=per_class, seed=seed, steps=sample_steps)
    metrics["model"] = {"path": str(model_dir), "fingerprint": model.fingerprint()}
    metrics["judge_test_accuracy"] = judge.test_accuracy
    if json_path is not None:
        write_json(json_path, metrics)
    if metrics["forgotten_accuracy"] is not None:
        click.echo(f"forgotten classes {sorted(set(forget_classes))}: judge accuracy "
                   f"{metrics['forgotten_accuracy']:.3f}, entropy {metrics['forgotten_entropy']:.3f}")
    click.echo(f"retained classes: judge accuracy {metrics['retained_accuracy']:.3f}, "
               f"Frechet distance {metrics['retained_fd']:.3f}")
    click.echo("per class: " + ", ".join(f"{c}: {a:.2f}" for c, a in metrics["per_class_accuracy"].items()))
