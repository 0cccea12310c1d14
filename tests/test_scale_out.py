"""Scale-out plumbing: the ``python -m`` entries, and one cache filled by several processes at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from audit.cli import main
from audit.commands.common import ExitCode

REPO = Path(__file__).resolve().parents[1]

# Each process logs its request, and the builder waits until both have asked: the second then surely meets
# the entry while it is being built.
BUILD_ONCE = textwrap.dedent("""
    import logging, sys, time
    from pathlib import Path
    from diffusion.cache import load_or_build_model
    from diffusion.model import DiffusionModel

    logging.basicConfig(level=logging.INFO)
    directory, log = Path(sys.argv[1]), Path(sys.argv[2])

    def build():
        with log.open("a") as f:
            f.write("build\\n")
        deadline = time.time() + 120
        while log.read_text().count("request") < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        model = DiffusionModel.create(num_classes=10, seed=0, device="cpu", block_out_channels=(8, 16),
                                      layers_per_block=1, num_train_timesteps=100)
        return model, {"role": "test"}

    with log.open("a") as f:
        f.write("request\\n")
    model, built = load_or_build_model(directory, build, "test model")
    print(built, model.fingerprint())
""")


def test_two_processes_needing_one_cache_entry_build_it_once(tmp_path):
    directory, log = tmp_path / "cache" / "retrained" / "0123456789abcdef", tmp_path / "log.txt"
    log.touch()
    runs = [subprocess.Popen([sys.executable, "-c", BUILD_ONCE, str(directory), str(log)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert log.read_text().count("build") == 1
    built = sorted(out.split()[0] for out, _ in outputs)
    assert built == ["False", "True"]
    assert len({out.split()[1] for out, _ in outputs}) == 1  # the waiter loaded what the builder saved
    waiter = next(err for out, err in outputs if out.startswith("False"))
    assert "waiting for another process building test model" in waiter
    assert (directory / "erasediff.json").is_file()
    assert sorted(p.name for p in directory.parent.iterdir()) == [".0123456789abcdef.lock", directory.name]


def test_python_m_entries_run_the_command_line():
    for module in ("erasediff", "audit.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--version"], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("erasediff, version")


def test_references_index_out_of_range_is_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(main, ["references", "--index", "3", "--of", "2", "--quiet"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.output.strip().splitlines() == ["error: reference index 3 is out of range: expected 1 to 2"]
    result = CliRunner().invoke(main, ["references", "--index", "0", "--of", "2"])
    assert result.exit_code == ExitCode.USAGE and "0 is not in the range x>=1" in result.output
