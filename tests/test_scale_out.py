"""Scale-out plumbing: the ``python -m`` entries, one cache filled by several processes at once, ``--threads``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from audit.config import config_from_dict
from diffusion.errors import UsageError
from erasediff.cli import main
from erasediff.cli.common import ExitCode

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


def test_python_m_erasediff_runs_the_command_line():
    """The entry ``accelerate launch -m erasediff`` uses."""
    result = subprocess.run([sys.executable, "-m", "erasediff", "--version"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("erasediff, version")


def test_references_index_out_of_range_is_one_line_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(main, ["references", "--index", "3", "--of", "2", "--quiet"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.output.strip().splitlines() == ["error: reference index 3 is out of range: expected 1 to 2"]
    result = CliRunner().invoke(main, ["references", "--index", "0", "--of", "2"])
    assert result.exit_code == ExitCode.USAGE and "0 is not in the range x>=1" in result.output


def test_threads_flag_sets_torch_threads_and_is_recorded(tmp_path):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "m"), "--threads", str(wanted),
                                           "--steps", "2", "--batch-size", "16", "--block-out-channels", "8,16",
                                           "--quiet"])
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / "m" / "erasediff.json").read_text())
        assert record["environment"]["torch_threads"] == wanted
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_a_positive_count():
    with pytest.raises(UsageError, match="config key 'threads' must be a number of CPU threads in"):
        config_from_dict({"threads": 0})
    result = CliRunner().invoke(main, ["unlearn", "--threads", "0"])
    assert result.exit_code == ExitCode.USAGE and "'--threads': 0 is not in the range" in result.output


def test_shares_of_a_global_batch_draw_what_one_process_draws(digits, splits):
    from diffusion.splits import ForgetSpec, ForgetTask
    from unlearn.losses import draw_timesteps_and_noise, relabel_target
    from unlearn.sharding import Shard

    from .conftest import tiny_model

    model = tiny_model()
    task = ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(0,)))  # relabels draw from classes 1-9
    batch = digits.select(list(range(0, 64, 2)))  # 32 images of every class

    def draws(shard: Shard):
        generator = torch.Generator().manual_seed(7)
        share = shard.of(batch)
        t, noise = draw_timesteps_and_noise(model, share, generator)
        target = relabel_target(model, share, task, generator)
        return share.ids, t, noise, target.target

    whole = draws(Shard())
    halves = [draws(Shard(index, 2)) for index in range(2)]
    ids, t, noise, target = (torch.cat(parts) for parts in zip(*halves))
    assert torch.equal(ids, whole[0]) and torch.equal(t, whole[1]) and torch.equal(noise, whole[2])
    torch.testing.assert_close(target, whole[3])  # the same targets (other classes drawn alike), batched apart
    assert Shard(1, 3).usable(32) == 30 and Shard(1, 3).rows(30) == slice(10, 20)
