"""The ``erasediff`` command line: one command, one subcommand per job."""

from __future__ import annotations

import click

from .commands.attack import attack_command
from .commands.audit import audit_command
from .commands.evaluate import evaluate_command
from .commands.references import references_command
from .commands.report import report_command
from .commands.train import train_command
from .commands.unlearn import unlearn_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="erasediff")
def main() -> None:
    """Erase data from a trained diffusion model and prove it by attacking the model before and after.

    Exit codes: 0 ok (audit PASS), 1 audit FAIL, 2 usage or config error, 3 runtime error, 4 audit INCONCLUSIVE.
    """


main.add_command(train_command)
main.add_command(audit_command)
main.add_command(report_command)
main.add_command(unlearn_command)
main.add_command(evaluate_command)
main.add_command(attack_command)
main.add_command(references_command)


if __name__ == "__main__":  # ``python -m audit.cli``, as ``accelerate launch -m audit.cli`` runs it
    main(prog_name="erasediff")
