"""Two processes under ``accelerate launch`` against one, on the CPU (torchrun with the gloo backend).

Training shares one global batch across processes (every process draws the same batch, timesteps and noise and
takes its share of the rows), so two processes compute the one-process gradient up to floating-point summation
order. The function the model computes then agrees to ~1e-7 relative; single weights may differ by up to a few
learning rates where the gradient is pure rounding noise (a bias right before a group norm has zero true
gradient, and Adam turns its noise into +-lr steps), so the test compares predictions, not weights.
The unlearning loop lets each process draw its own share of the batch (process 0 draws what one process draws):
a two-process EraseDiff run is a statistically equivalent run, so it is compared with a one-process run as another
seed would be: its update has the same size and points the same way about as much.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from diffusion.model import DiffusionModel

pytestmark = pytest.mark.slow  # starts several launched runs (about a minute)

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--quiet", "--threads", "1"]
TINY = ["--block-out-channels", "8,16", *QUIET]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, *args) -> subprocess.Popen:
    """``accelerate launch --multi_gpu --num_processes N -m erasediff ARGS`` on the CPU (no GPU visible)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "erasediff", *map(str, args)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erasediff", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def predictions(path: Path) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=generator)
    t = torch.randint(0, 1000, (32,), generator=generator)
    c = torch.randint(0, 10, (32,), generator=generator)
    with torch.no_grad():
        return DiffusionModel.load(path, device="cpu").predict_noise(x, t, c)


def update(path: Path, start: Path) -> torch.Tensor:
    before = DiffusionModel.load(start, device="cpu").unet.state_dict()
    after = DiffusionModel.load(path, device="cpu").unet.state_dict()
    return torch.cat([(after[k] - before[k]).flatten() for k in before])


def test_two_processes_train_and_unlearn_as_one_and_only_the_first_writes(tmp_path):
    train = ["train", "--steps", "20", "--batch-size", "16", *TINY]
    one = run(*train, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    launched = launch(2, *train, "--out", tmp_path / "two")
    out, err = launched.communicate(timeout=300)
    assert launched.returncode == 0, err
    assert out.count("reference model written to") == 1  # one process writes and says so
    a, b = predictions(tmp_path / "one"), predictions(tmp_path / "two")
    assert ((a - b).norm() / a.norm()).item() < 1e-5
    curves = [json.loads((tmp_path / name / "erasediff.json").read_text())["loss_curve"] for name in ("one", "two")]
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)  # the logged loss is the global batch's on both

    unlearn = ["unlearn", "--model", tmp_path / "one", "--method", "erasediff", "--forget-class", "1",
               "--steps", "6", "--batch-size", "32", *QUIET]
    for name, seed in (("u_one", 0), ("u_seed1", 1)):
        assert run(*unlearn, "--seed", seed, "--out", tmp_path / name).returncode == 0
    launched = launch(2, *unlearn, "--out", tmp_path / "u_two")
    out, err = launched.communicate(timeout=300)
    assert launched.returncode == 0, err
    assert out.count("unlearned model written to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "u_one", "u_seed1", "u_two"]
    reference, two, other_seed = (update(tmp_path / n, tmp_path / "one") for n in ("u_one", "u_two", "u_seed1"))
    cosine = torch.nn.functional.cosine_similarity
    # another seed's update: cosine ~0.48 with the one-process update, the same norm within a few percent
    assert cosine(reference, two, dim=0) > 0.5 * cosine(reference, other_seed, dim=0)
    assert 0.8 < (two.norm() / reference.norm()).item() < 1.25


def test_a_killed_process_fails_the_launch_and_leaves_no_output(tmp_path):
    out_dir = tmp_path / "model"
    launched = launch(2, "train", "--steps", "100000", "--batch-size", "16", *TINY, "--out", out_dir)
    parent = psutil.Process(launched.pid)
    deadline, victim = time.time() + 120, None
    while victim is None and time.time() < deadline:
        for child in parent.children(recursive=True):
            try:
                if child.environ().get("LOCAL_RANK") == "1" and child.cpu_times().user > 3:
                    victim = child
            except psutil.Error:
                continue
        time.sleep(0.5)
    assert victim is not None, "the second process never started"
    victim.send_signal(signal.SIGKILL)
    _, err = launched.communicate(timeout=120)
    assert launched.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) <= 1, ours  # the first process, stopped by the launcher, says so in one line
    # no traceback from erasediff's own code (the launcher reports its own failure)
    assert not re.search(rf'File "{re.escape(str(REPO))}/(audit|diffusion|unlearn|attacks|reports|erasediff)/', err)
    assert not out_dir.exists() and list(tmp_path.iterdir()) == []


def test_attack_scores_sharded_over_two_processes_are_the_one_process_scores(tmp_path):
    assert run("train", "--steps", "20", "--batch-size", "16", *TINY, "--out", tmp_path / "m").returncode == 0
    attack = ["attack", "--model", tmp_path / "m", "--attacks", "loss,pia", "--forget-class", "2",
              "--batch-size", "16", "--calibration-images", "0", *QUIET]
    one = run(*attack, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    launched = launch(2, *attack, "--out", tmp_path / "two")
    out, err = launched.communicate(timeout=300)
    assert launched.returncode == 0, err
    assert out.count("scores and metrics written to") == 1
    for name in ("loss", "pia"):
        scores = [(tmp_path / run_dir / "scores" / f"{name}.csv").read_text() for run_dir in ("one", "two")]
        assert scores[0] == scores[1] and scores[0].count("\n") > 50
