"""``erasediff report``: re-render an audit's report.html from its results.json (no model work)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from diffusion.errors import UsageError
from diffusion.io import check_output_file, read_text_file
from reports import write_report

from .common import configure_logging, handle_errors, quiet_option

MAX_RESULTS_BYTES = 256 * 2**20  # a results.json holds every ROC point; far below this even for large audits


@click.command("report")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Where to write the HTML [report.html beside RESULTS].")
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@quiet_option
@handle_errors
def report_command(results: Path, out: Path | None, force: bool, quiet: bool):
    """Render RESULTS (an audit's results.json, with its scores/ and images/ beside it) to one HTML file.

    The default report.html beside RESULTS is this command's own output and is replaced; an existing --out
    file is replaced only with --force.
    """
    configure_logging(quiet)
    text = read_text_file(results, "results file", MAX_RESULTS_BYTES, "an audit's results.json")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, too deep, a number too long to read
        raise UsageError(f"'{results}' is not JSON: {str(error)[:120]}") from None
    if not isinstance(document, dict) or "schema_version" not in document:
        raise UsageError(f"'{results}' is not an erasediff results document (no schema_version)")
    inputs = {"results file": results, "images folder": results.parent / "images",
              "scores folder": results.parent / "scores"}
    check_output_file(out or results.with_name("report.html"), force or out is None, inputs)
    click.echo(f"report written to {write_report(results, out)}")
