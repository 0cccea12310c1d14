import json
from pathlib import Path

from click.testing import CliRunner

from diffusion.loading import load_model
from erasediff.cli import main

TINY_ARGS = ["--steps", "3", "--batch-size", "16", "--block-out-channels", "8,16", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_writes_a_diffusers_model(tmp_path):
    out = tmp_path / "ref"
    result = invoke("train", "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    model = load_model(out, device="cpu")
    record = json.loads((out / "erasediff.json").read_text())
    assert record["steps"] == 3 and record["splits"]["seed"] == 0
    assert record["fingerprint"] == model.fingerprint()
    assert record["environment"]["packages"]["torch"]
    assert [p.name for p in tmp_path.iterdir()] == ["ref"]  # no temporary folder left behind


def test_existing_output_is_refused_without_force(tmp_path):
    out = tmp_path / "ref"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("train", "--out", out, *TINY_ARGS)
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = invoke("train", "--out", out, "--force", *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "unet").is_dir()


def test_bad_data_path_is_a_usage_error(tmp_path):
    result = invoke("train", "--out", tmp_path / "ref", "--data", tmp_path / "no-such-folder", *TINY_ARGS)
    assert result.exit_code == 2
    assert "no-such-folder" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "ref").exists()


def test_bad_channels_is_a_usage_error(tmp_path):
    result = invoke("train", "--out", tmp_path / "ref", "--block-out-channels", "8,x")
    assert result.exit_code == 2 and "8,x" in result.output
    assert not (tmp_path / "ref").exists()


def test_ci_runs_the_readme_test_command():
    root = Path(__file__).resolve().parents[1]
    readme = [line.strip() for line in (root / "README.md").read_text().splitlines()]
    ci_lines = (root / ".ci" / "run").read_text().splitlines()
    test_command = ci_lines[-1]
    assert test_command in readme[:20], "README command (b) and .ci/run differ"
