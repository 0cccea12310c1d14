"""``erasediff audit``: certify (or refuse to certify) an erasure; the exit code is the compliance gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from audit.config import AuditConfig, load_config
from diffusion.io import check_output_dir
from diffusion.presets import RECIPE_PRESETS
from reports import write_report

from .common import THREADS_HELP, ExitCode, configure_logging, handle_errors, on_main_process

DEFAULTS = AuditConfig()


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def task_options(command: Callable) -> Callable:
    """The options that say which audit a command serves (config file, models, forget spec, data, seed): shared
    by ``audit`` and ``references`` so that both find the same cache entries."""
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path),
                     help="YAML file of audit settings (keys as below, with underscores); flags override it."),
        click.option("--model",
                     help="Original model: diffusers folder or hf://owner/name. Default: the built-in reference."),
        click.option("--preset", type=click.Choice(list(RECIPE_PRESETS)), default=None,
                     help="Recipe of the built-in reference and of the retrained references: 'thorough' trains 3x "
                          "longer for a reference that remembers (membership AUC ~1.0) [default]."),
        click.option("--forget-class", "forget_classes", type=int, multiple=True,
                     help=f"Class id to forget (repeatable) [{DEFAULTS.forget_classes[0]}]."),
        click.option("--forget-ids", type=click.Path(path_type=Path), help="Text file of member sample ids to forget."),
        click.option("--forget-files", type=click.Path(path_type=Path),
                     help="The forget set by file: a list of image paths under --data (one per line) or a folder "
                          "inside it."),
        click.option("--members", type=click.Path(path_type=Path),
                     help="A model trained elsewhere: the images it was trained or fine-tuned on (a list of paths "
                          "under --data, or a folder inside it). Needs --heldout; replaces the drawn split."),
        click.option("--heldout", type=click.Path(path_type=Path),
                     help="Images of the same distribution the model never trained on (a list or a folder inside "
                          "--data), the non-members every membership attack compares with."),
        click.option("--recipe", type=click.Path(path_type=Path),
                     help="A model trained elsewhere: YAML file of how it was trained (from scratch, or fine-tuned "
                          "from a base), so that the references are trained the same way."),
        click.option("--canaries", type=click.Path(path_type=Path),
                     help="Canary folder ('erasediff canaries make') the original was trained with: its included "
                          "canaries join the forget set, and the canary test runs beside the references."),
        click.option("--forget-concept", "forget_concept", multiple=True,
                     help="Text-to-image models: a prompt naming the concept to erase (repeatable); without --model "
                          "the built-in text model of the digits is audited."),
        click.option("--anchor", help="Text-to-image models: the prompt the concept is mapped to [the empty prompt]."),
        click.option("--data", help="'digits' or an image folder [digits]."),
        click.option("--split-seed", type=int, help="Seed of the member / heldout split [0]."),
        click.option("--member-fraction", type=float,
                     help=f"Fraction of images that are members [{DEFAULTS.member_fraction}]."),
        click.option("--allow-other-data", is_flag=True, default=None,
                     help="Audit models on other data than they record having been trained on."),
        click.option("--seed", type=int, help="Seed of unlearning, attacks and sampling [0]."),
        click.option("--quiet", is_flag=True, default=None, help="No progress bars or info logs."),
        click.option("--threads", type=int, default=None, help=THREADS_HELP),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def task_overrides(model, preset, forget_classes, forget_ids, forget_files, members, heldout, recipe, canaries,
                   forget_concept, anchor, data, split_seed, member_fraction, allow_other_data, seed, quiet,
                   threads) -> dict:
    """The config keys of :func:`task_options`' values (None where a flag was not given)."""
    by_sample = forget_ids or forget_files or canaries
    paths = {"forget_ids": forget_ids, "forget_files": forget_files, "members": members, "heldout": heldout,
             "recipe": recipe, "canaries": canaries}
    return {
        "model": model, "preset": preset,
        # --forget-ids, --forget-files or --canaries alone mean "these samples only", not "these samples plus the
        # default class"
        "forget_classes": list(forget_classes) or ([] if by_sample and not forget_concept else None),
        **{key: str(path) if path else None for key, path in paths.items()},
        "forget_concept": list(forget_concept) or None, "anchor": anchor,
        "data": data, "split_seed": split_seed, "member_fraction": member_fraction,
        "allow_other_data": allow_other_data, "seed": seed, "quiet": quiet, "threads": threads,
    }


@click.command("audit")
@task_options
@click.option("--unlearned", help="Unlearned model to audit (folder). Default: run --method now.")
@click.option("--retrained", multiple=True,
              help="A model retrained without the forget set (folder; repeatable: each is one reference). "
                   "Default: train --references of them.")
@click.option("--unverified-references", is_flag=True, default=None,
              help="Accept --retrained models that record no retraining (trained elsewhere): you vouch that they "
                   "were retrained without the forget set, and the verdict says so.")
@click.option("--references", "retrain_references", type=int,
              help=f"How many references to retrain when no --retrained is given [{DEFAULTS.retrain_references}].")
@click.option("--retrain/--no-retrain", default=None, help="Train the references when none is given.")
@click.option("--method", help=f"Unlearning method to run when --unlearned is not given [{DEFAULTS.method}].")
@click.option("--forget-label", help="Free text naming the deletion request (shown in the report).")
@click.option("--attacks", help=f"Comma-separated membership attacks [{','.join(DEFAULTS.attacks)}].")
@click.option("--calibration-images", type=int,
              help="Retained members and heldout non-members (never scored) on which the attacks fit their "
                   f"timesteps against the original model; 0 = fixed paper defaults [{DEFAULTS.calibration_images}].")
@click.option("--out", type=click.Path(path_type=Path), help=f"Output folder [{DEFAULTS.out}].")
@click.option("--force", is_flag=True, default=None, help="Replace the output folder if it exists.")
@handle_errors
def audit_command(config_file, unlearned, retrained, unverified_references, retrain_references, retrain, method,
                  forget_label, attacks, calibration_images, out, force, **task):
    """Audit an erasure: the unlearned model against models retrained without the forget set, under every attack.

    With no arguments it runs the built-in default end to end: the reference model on the bundled digits
    (trained once, then cached), EraseDiff forgetting class 0, K models retrained without class 0 (cached), the
    attack battery on every model, and OUT/report.html. Each check is an equivalence test: PASS when the
    interval of the difference lies within its margin, FAIL when outside, INCONCLUSIVE otherwise, and the audit
    is INCONCLUSIVE when its attacks cannot tell the original model from the references.

    Exit code 0 = PASS, 1 = FAIL, 4 = INCONCLUSIVE, 2 = usage or config error (nothing written), 3 = runtime error.
    """
    overrides = {
        **task_overrides(**task),
        "unlearned": unlearned, "retrained": list(retrained) or None, "unverified_references": unverified_references,
        "retrain_references": retrain_references,
        "retrain": retrain, "method": method, "forget_label": forget_label, "attacks": _csv(attacks),
        "calibration_images": calibration_images, "out": str(out) if out else None, "force": force,
    }
    config = load_config(config_file, overrides)
    configure_logging(config.quiet)
    check_output_dir(config.out, config.force, config.input_paths(config_file))
    from audit.run import run_audit  # heavy imports (attacks, unlearning) only when an audit really runs

    results = run_audit(config, render=write_report)

    def summary() -> None:
        passed = sum(c.decision == "PASS" for c in results.checks)
        alone = "; without retrained references" if results.power.without_references else ""
        click.echo(f"verdict: {results.verdict} ({passed}/{len(results.checks)} checks passed{alone}); "
                   f"report: {Path(config.out) / 'report.html'}")
        for check in results.checks:
            if check.decision != "PASS":
                click.echo(f"  {check.decision.lower()} {check.name}: {check.detail}")
        click.echo(results.power.statement)

    on_main_process(summary)
    codes = {"PASS": ExitCode.OK, "FAIL": ExitCode.GATE_FAILED, "INCONCLUSIVE": ExitCode.INCONCLUSIVE}
    raise SystemExit(codes[results.verdict])
