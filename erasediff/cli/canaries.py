"""``erasediff canaries``: plant canaries for an exact deletion test (``make``) and run that test (``audit``)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    ExitCode,
    configure_logging,
    data_option,
    handle_errors,
    out_option,
    quiet_option,
    seed_option,
    split_options,
    threads_option,
)


@click.group("canaries")
def canaries_command() -> None:
    """Canaries: images assigned to training at random, deleted with every deletion request, and tested exactly.

    1. erasediff canaries make --count 400 --seed S --out C    (keep C/sealed/ away from whoever unlearns)
    2. erasediff train --canaries C ...                        (the included canaries train as members)
    3. erasediff unlearn --canaries C --forget-ids F ...       (the included canaries are deleted with F)
    4. erasediff canaries audit --canaries C --model M --unlearned U --out O
    """


@canaries_command.command("make")
@data_option
@split_options
@click.option("--count", type=click.IntRange(min=4), default=None,
              help="Canaries in all (2M): drawn from the heldout images, each included in training with "
                   "probability 1/2.  [default: 400]")
@click.option("--images", "images", type=str, default=None,
              help="Your own canaries instead: a folder of the data's images, or a text file of their paths under "
                   "the data folder (one per line); each included with probability 1/2.")
@out_option()
@seed_option
@quiet_option
@handle_errors
def make_command(data, split_seed, member_fraction, count, images, out: Path, force, seed, quiet):
    """Draw canaries and write OUT/canaries.json, OUT/included_ids.txt (for the trainer; OUT/included_files.txt
    for an image folder) and OUT/sealed/ (the assignment, for the auditor only; a model records only its SHA-256
    commitment)."""
    configure_logging(quiet)
    from diffusion.canaries import draw_canaries, write_canaries
    from diffusion.data import load_dataset, read_file_list
    from diffusion.errors import UsageError
    from diffusion.splits import make_splits

    if images is not None and count is not None:
        raise UsageError("give --count (canaries drawn from the heldout images) or --images (your own), not both")
    dataset = load_dataset(data)
    chosen = None
    if images is not None:
        chosen = dataset.ids_of_files(read_file_list(images, "the canary images", data), "the canary images")
    splits = make_splits(dataset.labels, split_seed, member_fraction)
    canaries, sealed = draw_canaries(data, dataset, splits, 400 if count is None else count, seed, chosen)
    write_canaries(out, canaries, sealed, force, dataset.files)
    click.echo(f"{canaries.ids.size} canaries written to {out} ({sealed.included.size} included in training; "
               f"commitment {canaries.commitment[:16]}...)")


@canaries_command.command("audit")
@click.option("--canaries", "canary_dir", type=click.Path(path_type=Path), required=True,
              help="The folder of 'erasediff canaries make', with its sealed assignment.")
@click.option("--model", type=click.Path(path_type=Path), required=True,
              help="The original model, trained with --canaries.")
@click.option("--unlearned", type=click.Path(path_type=Path), required=True,
              help="The model after the deletion (made with 'erasediff unlearn --canaries').")
@click.option("--attacks", default="loss,secmi,pia,pian,sima", show_default=True,
              help="Membership attacks, comma-separated (the best is chosen on a calibration half of the canaries).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Level of the randomisation test.")
@click.option("--auc-margin", type=click.FloatRange(0, 0.5, min_open=True), default=0.1, show_default=True,
              help="A PASS needs the attacker's AUC (deleted vs never-included) at most 0.5 + this.")
@out_option()
@seed_option
@quiet_option
@threads_option
def audit_command(canary_dir: Path, model: Path, unlearned: Path, attacks, alpha, auc_margin, out: Path, force,
                  seed, quiet):
    """Score the deleted canaries against the never-included ones on the unlearned model and the original: an exact
    randomisation test, a bound on the attacker's AUC and the one-run epsilon bound; no retrained model needed.

    Exit code 0 = PASS, 1 = FAIL, 4 = INCONCLUSIVE, 2 = usage error (nothing written), 3 = runtime error.
    """
    configure_logging(quiet)
    from audit.canary import CanaryAuditConfig, run_canary_audit
    from reports.html import write_canary_report

    names = [a.strip() for a in attacks.split(",") if a.strip()]
    config = CanaryAuditConfig(str(canary_dir), str(model), str(unlearned), attacks=names, alpha=alpha,
                               auc_margin=auc_margin, seed=seed, out=str(out), force=force, quiet=quiet)
    results = run_canary_audit(config, render=write_canary_report)
    click.echo(f"canary verdict: {results['verdict']}: {results['why']}; report: {out / 'report.html'}")
    codes = {"PASS": ExitCode.OK, "FAIL": ExitCode.GATE_FAILED, "INCONCLUSIVE": ExitCode.INCONCLUSIVE}
    raise SystemExit(codes[results["verdict"]])
