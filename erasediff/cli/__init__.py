"""The ``erasediff`` command line: one command, one subcommand per job.

Subcommands are imported when they run (a click group that loads lazily), so ``erasediff report`` imports the
report and nothing that needs torch.
"""

from __future__ import annotations

import importlib

import click

# subcommand -> "module:attribute" inside this package, in the order --help lists them
SUBCOMMANDS = {
    "train": "train:train_command",
    "audit": "audit:audit_command",
    "report": "report:report_command",
    "unlearn": "unlearn:unlearn_command",
    "evaluate": "evaluate:evaluate_command",
    "attack": "attack:attack_command",
    "references": "references:references_command",
    "canaries": "canaries:canaries_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands (``SUBCOMMANDS``) are imported only when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attribute = SUBCOMMANDS[name].split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="erasediff")
def main() -> None:
    """Erase data from a trained diffusion model and prove it by attacking the model before and after.

    Exit codes: 0 ok (audit PASS), 1 audit FAIL, 2 usage or config error, 3 runtime error, 4 audit INCONCLUSIVE.
    """
