"""Options and error handling shared by every ``erasediff`` subcommand.

Exit codes (:class:`ExitCode`): 0 ok / gate passed, 1 gate failed, 2 usage or config error, 3 runtime error,
4 audit verdict INCONCLUSIVE.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from types import FrameType

import click

from diffusion.errors import RunError, UsageError
from diffusion.presets import DEFAULT_MEMBER_FRACTION

logger = logging.getLogger("erasediff")

THREADS_HELP = ("CPU threads for torch [one per core]. Give 1 (or cores / jobs) when other jobs share the cores: "
                "multi-threaded jobs on shared cores slow each other several-fold (README, --threads).")


class ExitCode(IntEnum):
    """The process exit status of every ``erasediff`` command."""

    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    RUNTIME = 3
    INCONCLUSIVE = 4  # the audit could not decide (DESIGN 3.4)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup (temporary folders) runs."""


def fail(message: str, code: ExitCode, *, every_process: bool = True) -> None:
    """Print one line to stderr and exit with ``code``.

    Under a launcher (``RANK`` set by torchrun / ``accelerate launch``) other processes than the first name their
    rank, and print nothing when not ``every_process`` (a usage error, the same on every process).
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        click.echo(f"error: {message}", err=True)
    elif every_process:
        click.echo(f"error: process {rank}: {message}", err=True)
    sys.exit(code)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (only the main thread can receive signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def on_main_process(write: Callable[[], None]) -> None:
    """Run ``write`` (writing an output and saying so) on the main process only; the other processes of an
    Accelerate launch wait until it is done."""
    from diffusion.training import process_state  # torch only when the command runs

    state = process_state()
    if state.is_main_process:
        write()
    state.wait_for_everyone()


def save_model_once(model, record: dict, out: Path, force: bool, inputs: dict, message: str) -> None:
    """Save ``model`` with ``record`` to ``out`` (atomically) and echo ``message``, on the main process only."""
    from diffusion.io import atomic_output_dir

    def write() -> None:
        with atomic_output_dir(out, force, inputs) as tmp:
            model.save(tmp, record)
        click.echo(message)

    on_main_process(write)


def threads_option(command: Callable) -> Callable:
    """Add ``--threads N`` (torch's CPU threads for this command) to a command that does model work."""

    @click.option("--threads", type=click.IntRange(min=1, max=1024), default=None, help=THREADS_HELP)
    @functools.wraps(command)
    def wrapper(*args, threads: int | None = None, **kwargs):
        from diffusion.environment import use_threads  # torch only when the command runs

        use_threads(threads)
        return command(*args, **kwargs)

    return handle_errors(wrapper)  # a refused --threads is a usage error like any other


def handle_errors(command: Callable) -> Callable:
    """Turn :class:`UsageError` into exit 2 and any other failure (SIGTERM too) into exit 3, each as one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return command(*args, **kwargs)
        except click.ClickException:  # click's own usage errors: it prints them and exits 2
            raise
        except UsageError as error:
            fail(str(error), ExitCode.USAGE, every_process=False)
        except RunError as error:
            fail(str(error), ExitCode.RUNTIME)
        except KeyboardInterrupt as error:
            fail("terminated" if isinstance(error, Terminated) else "interrupted", ExitCode.RUNTIME)
        except Exception as error:  # a bug or a broken environment: one line, the traceback in the debug log
            logger.debug("unexpected error", exc_info=True)
            fail(f"{type(error).__name__}: {error} (rerun with ERASEDIFF_DEBUG=1 for the traceback)",
                 ExitCode.RUNTIME)

    return wrapper


def configure_logging(quiet: bool) -> None:
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


def data_option(command: Callable) -> Callable:
    """--data: which images."""
    return click.option(
        "--data", default="digits", show_default=True,
        help="'digits' (scikit-learn's bundled 8x8 digits) or a folder with one sub-folder of images per class "
             "(resized to the model's image size).",
    )(command)


def allow_other_data_option(command: Callable) -> Callable:
    """--allow-other-data: use a model on other data than it records having been trained on."""
    return click.option(
        "--allow-other-data", is_flag=True,
        help="Use the model on other data than it records having been trained on (its numbers then say little).",
    )(command)


def split_options(command: Callable) -> Callable:
    """--split-seed, --member-fraction: which images are the training members."""
    command = click.option(
        "--member-fraction", type=float, default=DEFAULT_MEMBER_FRACTION, show_default=True,
        help="Fraction of the images (stratified by class) that are training members.",
    )(command)
    return click.option(
        "--split-seed", type=int, default=0, show_default=True, help="Seed of the member / heldout split."
    )(command)


def declared_roles_options(command: Callable) -> Callable:
    """--members, --heldout: the data roles of a model this project did not train, declared by file."""
    command = click.option(
        "--heldout", type=click.Path(path_type=Path), default=None,
        help="Images of the same distribution the model never trained on (a list of paths under --data, or a "
             "folder inside it).",
    )(command)
    return click.option(
        "--members", type=click.Path(path_type=Path), default=None,
        help="A model trained elsewhere: the images it was trained or fine-tuned on (a list of paths under --data, "
             "or a folder inside it); needs --heldout, and replaces the split drawn from --split-seed.",
    )(command)


def model_data_options(command: Callable) -> Callable:
    """--data, --split-seed, --member-fraction, --members, --heldout and --allow-other-data: the data a saved model
    is used on, and its member split."""
    return data_option(split_options(declared_roles_options(allow_other_data_option(command))))


def model_split(metadata: dict, source: str, dataset, data: str, split_seed: int, member_fraction: float,
                members: Path | None, heldout: Path | None):
    """The member split a saved model is used with: declared (``members``, ``heldout``), or drawn from the split
    seed; refused for a model that records none when none is declared (a split is never invented)."""
    from diffusion.provenance import require_member_split  # torch only when the command runs
    from diffusion.splits import member_split

    require_member_split(metadata, source, bool(members or heldout))
    return member_split(dataset, data, split_seed, member_fraction, str(members) if members else None,
                        str(heldout) if heldout else None)


def canaries_option(command: Callable) -> Callable:
    """--canaries: the canary folder of ``erasediff canaries make`` (the included canaries are members)."""
    return click.option(
        "--canaries", "canary_dir", type=click.Path(path_type=Path), default=None,
        help="A canary folder ('erasediff canaries make'): its included canaries are training members (train), "
             "are deleted with the forget set (unlearn), and are tested beside the references (audit).",
    )(command)


def out_option(required: bool = True, default: str | None = None) -> Callable:
    def decorate(command: Callable) -> Callable:
        command = click.option("--force", is_flag=True, help="Replace the output folder if it exists.")(command)
        return click.option(
            "--out", type=click.Path(path_type=Path), required=required, default=default,
            show_default=default is not None, help="Output folder (written atomically).",
        )(command)

    return decorate
