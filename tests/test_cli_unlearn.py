"""``erasediff unlearn`` and ``erasediff evaluate`` end to end on a tiny saved model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from diffusion.loading import load_model
from diffusion.splits import ForgetSpec
from erasediff.cli import main

from .conftest import drawn_split_record, tiny_model

FAST = ["--steps", "3", "--batch-size", "16", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def folder_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def saved(tmp_path) -> Path:
    tiny_model(seed=2).save(tmp_path / "model", drawn_split_record())
    return tmp_path / "model"


def test_unlearn_writes_a_new_model_and_its_record(saved, tmp_path):
    before = folder_hash(saved)
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", saved, "--forget-class", 3, "--lambda", 0.5, "--param", "inner_steps=1",
                    "--param", "inner_lr=1e-5", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert folder_hash(saved) == before, "the input model folder changed"
    record = json.loads((out / "erasediff.json").read_text())
    unlearned = load_model(out, device="cpu")
    assert record["fingerprint"] == unlearned.fingerprint() != record["parent_model"]["fingerprint"]
    assert record["parent_model"]["fingerprint"] == load_model(saved, device="cpu").fingerprint()
    assert record["method"] == "erasediff" and record["steps"] == 3 and record["wall_seconds"] > 0
    assert record["params"]["fixed_lambda"] == 0.5 and record["params"]["inner_steps"] == 1
    assert record["params"]["inner_lr"] == 1e-5  # YAML 1.1 would leave "1e-5" a string
    assert record["forget_spec"]["fingerprint"] == ForgetSpec(classes=(3,)).fingerprint()
    assert set(record["curves"]) == {"loss_retain", "loss_forget", "q", "lambda", "cos_grad"}
    assert record["curves"]["lambda"] == [0.5] * 3


def test_unlearn_by_sample_ids(saved, tmp_path, splits):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# deletion request 42\n" + ", ".join(str(i) for i in splits.members[:20]))
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", saved, "--method", "random_label", "--forget-ids", ids_file,
                    "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "erasediff.json").read_text())
    assert record["forget_spec"]["sample_ids"] == sorted(int(i) for i in splits.members[:20])
    assert record["num_forget"] == 20 and record["method"] == "random_label"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "magic", "--forget-class", 3], "unknown unlearning method 'magic'"),
        (["--param", "alpha=1", "--forget-class", 3], "'alpha' is not a parameter of unlearning method 'erasediff'"),
        ([], "the forget set is empty"),
        ([a for c in range(10) for a in ("--forget-class", c)], "cannot forget every class"),
        (["--forget-class", 12], "forget class 12 is out of range"),
        (["--forget-class", 3, "--lr", "-1"], "The 'lr' parameter of EraseDiff must be a float in (0, inf). Got -1.0"),
        (["--forget-class", 3, "--param", "oops"], "--param expects KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, message, saved, tmp_path):
    before = folder_hash(saved)
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", saved, "--out", out, *FAST, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and folder_hash(saved) == before


def test_non_finite_weights_are_refused_at_load(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        next(model.unet.parameters()).fill_(float("inf"))
    model.save(tmp_path / "broken")
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", tmp_path / "broken", "--forget-class", 1, "--out", out, *FAST)
    assert result.exit_code == 2, result.output
    assert "non-finite weights in conv_in.weight" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["broken"]


def test_evaluate_writes_the_metrics(saved, tmp_path, judge, monkeypatch):
    # the session's real (briefly trained) judge stands in for the cached one, which takes a minute to train
    monkeypatch.setattr("erasediff.cli.evaluate.load_or_train_judge", lambda dataset: judge)
    path = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", saved, "--forget-class", 3, "--json", path, "--per-class", 4,
                    "--sample-steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(path.read_text())
    for key in ("forgotten_accuracy", "forgotten_entropy", "retained_accuracy", "retained_fd", "per_class_accuracy"):
        assert key in metrics
    assert len(metrics["per_class_accuracy"]) == 10 and 0 <= metrics["forgotten_accuracy"] <= 1
    assert metrics["model"]["fingerprint"] == load_model(saved, device="cpu").fingerprint()
    assert "forgotten classes [3]" in result.output
    again = invoke("evaluate", "--model", saved, "--forget-class", 3, "--json", tmp_path / "again.json",
                   "--per-class", 4, "--sample-steps", 2, "--quiet")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again.json").read_text()) == metrics  # same seed, same samples, same numbers


def test_evaluate_rejects_bad_classes(saved):
    result = invoke("evaluate", "--model", saved, "--forget-class", 10, "--quiet")
    assert result.exit_code == 2 and "forget class 10 is out of range" in result.output
