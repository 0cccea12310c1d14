"""``erasediff train``: train the class-conditional reference DDPM on the training members."""

from __future__ import annotations

from pathlib import Path

import click

from diffusion.canaries import canary_split
from diffusion.data import data_folder, load_dataset
from diffusion.errors import UsageError
from diffusion.io import check_output_dir
from diffusion.loading import load_model
from diffusion.provenance import load_data_for_model
from diffusion.reference import train_on_ids
from diffusion.splits import make_splits
from diffusion.training import MODEL_KINDS, TrainConfig

from .common import (
    canaries_option,
    configure_logging,
    data_option,
    handle_errors,
    out_option,
    quiet_option,
    save_model_once,
    seed_option,
    split_options,
    threads_option,
)

DEFAULTS = TrainConfig()


@click.command("train")
@data_option
@split_options
@out_option()
@click.option("--kind", type=click.Choice(MODEL_KINDS), default=DEFAULTS.kind, show_default=True,
              help="'class': a class-conditional UNet2DModel; 'text': a text-to-image model (UNet2DConditionModel, "
                   "CLIP text encoder and a tokenizer built here) on captions of the digits, saved as a "
                   "StableDiffusionPipeline folder.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help=f"Optimizer steps  [default: {DEFAULTS.steps}; {TrainConfig.for_kind('text').steps} for --kind "
                   "text]")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.lr, show_default=True)
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS.ema_decay,
              show_default=True)
@click.option("--block-out-channels", default=",".join(map(str, DEFAULTS.block_out_channels)), show_default=True,
              help="UNet block widths, comma-separated.")
@click.option("--image-size", type=int, default=8, show_default=True,
              help="Side of the images (image folders are resized to it; the bundled digits are 8).")
@click.option("--image-channels", type=click.Choice(["1", "3"]), default="1", show_default=True,
              help="Image channels: 1 grey, 3 RGB (image folders are converted; the bundled digits are grey).")
@click.option("--base", help="Fine-tune this model (a folder or hf://owner/name) instead of training a new one: the "
                             "fine-tuned model records its base and recipe, and an audit's references fine-tune the "
                             "base again without the forget set. The model's kind and image shape are the base's.")
@click.option("--lora-rank", type=click.IntRange(0, 1024), default=0, show_default=True,
              help="With --base: train a rank-R LoRA of every layer (merged into the weights at the end) instead of "
                   "every weight.")
@canaries_option
@seed_option
@quiet_option
@threads_option
@handle_errors
def train_command(data, split_seed, member_fraction, out: Path, force, kind, steps, batch_size, lr, ema_decay,
                  block_out_channels, image_size, image_channels, base, lora_rank, canary_dir, seed, quiet):
    """Train the reference diffusion model on the training members and save it (EMA weights); with --base,
    fine-tune a copy of that model on them.

    With --kind text: a text-to-image model of the bundled digits, trained on several paraphrased captions per
    digit (10% empty, for classifier-free guidance) and judged on paraphrases it never saw.

    The model is a diffusers UNet2DModel conditioned on the class label, with a DDPM schedule of 1000 steps,
    saved as a DDPM pipeline folder (safetensors) with erasediff.json beside it (split, recipe, time, versions).
    """
    configure_logging(quiet)
    inputs = {"data folder": data_folder(data), "canary folder": canary_dir,
              "base model": base if base and not base.startswith("hf://") else None}
    check_output_dir(out, force, inputs)
    try:
        widths = tuple(int(w) for w in block_out_channels.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas; got '{block_out_channels}'",
                                 param_hint="--block-out-channels") from None
    if lora_rank and base is None:
        raise UsageError(f"--lora-rank {lora_rank}: a LoRA adapts a base model; give --base")
    given = {"steps": steps} if steps is not None else {}
    base_model, extra = None, {}
    if base is not None:
        base_model = load_model(base)
        kind = base_model.recipe_kind
        dataset = load_data_for_model(data, base_model)
        extra["base"] = {"source": base, "fingerprint": base_model.fingerprint()}
    else:
        dataset = load_dataset(data, image_size=image_size, channels=int(image_channels))
    config = TrainConfig.for_kind(kind, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
                                  block_out_channels=widths, seed=seed, lora_rank=lora_rank, **given)
    splits = make_splits(dataset.labels, split_seed, member_fraction)
    if canary_dir is not None:
        splits, canaries, _ = canary_split(canary_dir, dataset, splits)
        extra["canaries"] = canaries.record()
    role = "reference" if base_model is None else "fine-tuned"
    trained = train_on_ids(dataset, splits.members, config, role=role, extra={"splits": splits.to_dict(), **extra},
                           quiet=quiet, base=base_model)
    save_model_once(trained.model, trained.record, out, force, inputs,
                    f"{role} model written to {out} ({trained.record['steps']} steps, "
                    f"{trained.record['wall_seconds']:.0f} s)")
