"""``erasediff references``: train one of an audit's retrained references into the shared cache."""

from __future__ import annotations

from pathlib import Path

import click

from audit.config import load_config

from .audit import task_options, task_overrides
from .common import configure_logging, handle_errors, on_main_process


@click.command("references")
@task_options
@click.option("--index", type=click.IntRange(min=1), required=True, help="Which reference to train: 1 to --of.")
@click.option("--of", "count", type=click.IntRange(min=1), required=True,
              help="How many references the audit uses (its --references).")
@handle_errors
def references_command(config_file, index, count, **task):
    """Train reference INDEX of COUNT for the audit these options describe (a model retrained without the forget
    set, with its own seed) into the cache, or find it there.

    The K references of an audit are independent jobs: run ``--index 1 --of K`` ... ``--index K --of K`` on K
    processes, GPUs or machines sharing one cache folder (ERASEDIFF_CACHE), then ``erasediff audit --references K``
    with the same options reuses them. Two jobs that need the same model (the built-in reference, one retrained
    reference) do not both train it: the second waits for the first and reuses its result.
    """
    overrides = {**task_overrides(**task), "retrain_references": count}
    config = load_config(config_file, overrides)
    configure_logging(config.quiet)
    from audit.run import fill_reference  # heavy imports only when a reference is really trained or found

    source = fill_reference(config, index)
    state = "found in the cache" if source["cached"] else "trained"
    on_main_process(lambda: click.echo(f"reference {index} of {count} (seed {source['seed']}) {state}: "
                                       f"{Path(source['source'])}"))
