"""Two processes under ``accelerate launch`` against one, on the CPU (torchrun with the gloo backend).

Training and unlearning share one global batch across processes: every process draws the same batch, timesteps
and noise and computes on its share of the rows (unlearn/sharding.py), so two processes compute the one-process
gradient up to floating-point summation order. The function the model computes then agrees to ~1e-7 relative;
single weights may differ by up to a few learning rates where the gradient is pure rounding noise (a bias right
before a group norm has zero true gradient, and Adam turns its noise into +-lr steps), so the tests compare
predictions (tolerance 1e-5 relative) and the logged losses, not weights.
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

from diffusion.loading import load_model

from .conftest import CONTROL_LABEL

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
        return load_model(path, device="cpu").predict_noise(x, t, c)


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
    assert run(*unlearn, "--out", tmp_path / "u_one").returncode == 0
    launched = launch(2, *unlearn, "--out", tmp_path / "u_two")
    out, err = launched.communicate(timeout=300)
    assert launched.returncode == 0, err
    assert out.count("unlearned model written to") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "u_one", "u_two"]
    a, b = predictions(tmp_path / "u_one"), predictions(tmp_path / "u_two")
    assert ((a - b).norm() / a.norm()).item() < 1e-5
    records = [json.loads((tmp_path / name / "erasediff.json").read_text()) for name in ("u_one", "u_two")]
    for key in ("loss_forget", "loss_retain", "lambda"):
        assert records[0]["curves"][key] == pytest.approx(records[1]["curves"][key], rel=1e-4)


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


BUILD_TOGETHER = """
import sys
from pathlib import Path
from diffusion.cache import load_or_build_model
from diffusion.model import DiffusionModel
from diffusion.training import process_state

directory = Path(sys.argv[1])
rank = process_state().process_index

def build():
    print(f"rank {rank} builds", flush=True)
    model = DiffusionModel.create(num_classes=10, seed=0, device="cpu", block_out_channels=(8, 16),
                                  layers_per_block=1, num_train_timesteps=100)
    return model, {"role": "test"}

model, built = load_or_build_model(directory, build, "test model")
print(f"rank {rank} built={built} {model.fingerprint()[:16]}", flush=True)
"""


def test_the_processes_of_a_launch_build_a_cache_entry_together_and_one_writes_it(tmp_path):
    script, directory = tmp_path / "build.py", tmp_path / "cache" / "retrained" / "fedcba9876543210"
    script.write_text(BUILD_TOGETHER)
    outputs = []
    for _ in range(2):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), str(script), str(directory)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    first, second = outputs
    assert first.count("builds") == 2  # both processes take part in building (training would be distributed)
    assert first.count("built=True") == 2 and second.count("built=False") == 2
    assert len({line.split()[-1] for line in (first + second).splitlines() if "built=" in line}) == 1
    assert sorted(p.name for p in directory.parent.iterdir()) == [".fedcba9876543210.lock", directory.name]


def test_an_audit_launched_on_two_processes_decides_as_one_and_writes_once(control_workspace, noop_audit, tmp_path):
    workspace, (one_out, _) = control_workspace, noop_audit
    out = tmp_path / "noop-two"
    launched = launch(2, "audit", "--config", workspace["config"], "--model", workspace["original"],
                      "--unlearned", workspace["original"], "--retrained", workspace["retrained_b"],
                      "--retrained", workspace["retrained_c"], "--forget-label", CONTROL_LABEL, "--out", out,
                      *QUIET)
    stdout, err = launched.communicate(timeout=600)
    assert launched.returncode != 0 and "verdict: FAIL" in stdout, err  # the no-op fails, as with one process
    assert stdout.count("verdict:") == 1
    one, two = (json.loads((folder / "results.json").read_text()) for folder in (one_out, out))
    assert [(c["name"], c["decision"]) for c in two["checks"]] == [(c["name"], c["decision"]) for c in one["checks"]]
    for c1, c2 in zip(one["checks"], two["checks"]):
        assert c2["estimate"] == pytest.approx(c1["estimate"], abs=1e-9)
    assert (out / "scores" / "sima.csv").read_text() == (one_out / "scores" / "sima.csv").read_text()
    assert list(tmp_path.iterdir()) == [out]
