"""Options and error handling shared by every ``erasediff`` subcommand.

Exit codes: 0 ok / gate passed, 1 gate failed, 2 usage or config error, 3 runtime error.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from diffusion.errors import RunError, UsageError

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
logger = logging.getLogger("erasediff")


def fail(message: str, code: int) -> None:
    """Print one line to stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(command: Callable) -> Callable:
    """Turn :class:`UsageError` into exit 2 and any other failure into exit 3, each as one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except click.ClickException:  # click's own usage errors: it prints them and exits 2
            raise
        except UsageError as error:
            fail(str(error), EXIT_USAGE)
        except RunError as error:
            fail(str(error), EXIT_RUNTIME)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_RUNTIME)
        except Exception as error:  # a bug or a broken environment: one line, the traceback in the debug log
            logger.debug("unexpected error", exc_info=True)
            fail(f"{type(error).__name__}: {error} (rerun with ERASEDIFF_DEBUG=1 for the traceback)", EXIT_RUNTIME)

    return wrapper


def configure_logging(quiet: bool) -> None:
    import os

    level = logging.DEBUG if os.environ.get("ERASEDIFF_DEBUG") else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("diffusers", "accelerate", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def quiet_option(command: Callable) -> Callable:
    return click.option("--quiet", is_flag=True, help="No progress bars or info logs.")(command)


def seed_option(command: Callable) -> Callable:
    return click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")(
        command
    )


def data_options(command: Callable) -> Callable:
    """--data, --split-seed, --member-fraction: which images, and which of them are training members."""
    command = click.option(
        "--member-fraction", type=float, default=0.5, show_default=True,
        help="Fraction of the images (stratified by class) that are training members.",
    )(command)
    command = click.option(
        "--split-seed", type=int, default=0, show_default=True, help="Seed of the member / heldout split."
    )(command)
    return click.option(
        "--data", default="digits", show_default=True,
        help="'digits' (scikit-learn's bundled 8x8 digits) or a folder with one sub-folder of images per class.",
    )(command)


def out_option(required: bool = True, default: str | None = None) -> Callable:
    def decorate(command: Callable) -> Callable:
        command = click.option("--force", is_flag=True, help="Replace the output folder if it exists.")(command)
        return click.option(
            "--out", type=click.Path(path_type=Path), required=required, default=default,
            show_default=default is not None, help="Output folder (written atomically).",
        )(command)

    return decorate
