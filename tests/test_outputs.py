"""Every output is checked before any work: one line, the right exit code, nothing written, inputs untouched.

Families (issue #13): exit codes; outputs that would overwrite an input or the cache; outputs that cannot be
written; leftovers of killed or terminated runs (temporaries named with their PID, removed by the next run).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from diffusion.data import load_image_folder
from diffusion.io import atomic_output_dir
from diffusion.judge import load_or_train_judge
from erasediff.cli import common, main
from erasediff.cli.common import ExitCode

from .conftest import drawn_split_record, tiny_model

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--steps", "3", "--batch-size", "16", "--block-out-channels", "8,16", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_usage_error(result, *fragments: str) -> None:
    """Exit 2 and exactly one line ``error: ...`` holding every fragment."""
    assert result.exit_code == ExitCode.USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with the bytes of files (None for folders and links)."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("saved") / "model"
    tiny_model().save(directory, drawn_split_record())
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, digits) -> dict[str, Path]:
    """A 3-class image folder of digits, a tiny model for it, its judge (cached) and a cheap audit config."""
    root = tmp_path_factory.mktemp("outputs")
    folder = root / "digits3"
    for c in range(3):
        (folder / f"digit{c}").mkdir(parents=True)
        for i in np.flatnonzero(digits.labels.numpy() == c):
            pixels = ((digits.images[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"digit{c}" / f"{i}.png")
    tiny_model(num_classes=3).save(root / "model", drawn_split_record(load_image_folder(folder, 8).labels))
    tiny_model(seed=1, num_classes=3).save(root / "reference")  # records nothing: given as declared
    with pytest.MonkeyPatch.context() as patch:  # the cache of conftest's autouse fixture, set up after this one
        patch.setenv("ERASEDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        load_or_train_judge(load_image_folder(folder, 8))
    config = root / "audit.yaml"
    config.write_text(f"data: {folder}\nforget_classes: [1]\nattacks: [loss]\nextraction_samples_per_class: 4\n"
                      "eval_samples_per_class: 4\nforgotten_samples_per_class: 4\neval_steps: 4\nresurrection: false\n")
    return {"root": root, "data": folder, "model": root / "model", "reference": root / "reference", "config": config}


def audit_args(workspace: dict[str, Path], out: Path) -> list[str]:
    model = workspace["model"]
    return ["audit", "--config", str(workspace["config"]), "--model", str(model), "--unlearned", str(model),
            "--retrained", str(workspace["reference"]), "--unverified-references", "--out", str(out), "--quiet"]


# 1. exit codes


def test_exit_codes_are_an_int_enum(tmp_path):
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "GATE_FAILED": 1, "USAGE": 2, "RUNTIME": 3, "INCONCLUSIVE": 4}
    assert not [name for name in dir(common) if name.startswith("EXIT_")]
    assert_usage_error(invoke("unlearn", "--model", tmp_path / "none", "--forget-class", 1, "--out",
                              tmp_path / "out", "--quiet"), "none")


# 2. outputs that would destroy an input or the cache


def test_output_overlapping_an_input_is_refused_even_with_force(tmp_path, saved_model):
    w = tmp_path / "w"
    model = w / "sub" / "model"
    shutil.copytree(saved_model, model)
    (w / "ids.txt").write_text("3\n")
    (w / "audit.yaml").write_text("forget_classes: [1]\n")
    results = w / "audit" / "results.json"
    (results.parent / "images").mkdir(parents=True)
    results.write_text('{"schema_version": 1}')
    link = tmp_path / "link"
    link.symlink_to(w)
    before = snapshot(w)
    unlearn = ["unlearn", "--model", model, "--forget-class", 1, "--quiet", "--force", "--out"]
    cases = [
        ([*unlearn, model], f"output folder '{model}' is the input model '{model}'"),
        ([*unlearn, w], f"output folder '{w}' contains the input model '{model}'; choose an --out outside every"),
        ([*unlearn, link / "sub"], "contains the input model"),  # symlinks resolved
        (["attack", "--model", model, "--quiet", "--force", "--out", model / "scores"], "lies inside the input model"),
        (["unlearn", "--model", saved_model, "--forget-ids", w / "ids.txt", "--force", "--out", w],
         "contains the forget-ids file"),
        (["train", "--data", w, "--force", "--out", w / "new", *TINY_TRAIN], "lies inside the data folder"),
        (["audit", "--config", w / "audit.yaml", "--force", "--out", w], "contains the config file"),
        (["audit", "--model", model, "--force", "--out", w / "sub"], "contains the original model"),
        (["evaluate", "--model", model, "--json", model / "metrics.json"], "lies inside the model folder"),
        (["report", results, "--out", results, "--force"], "is the results file"),
        (["report", results, "--out", results.parent / "images" / "r.html"], "lies inside the images folder"),
    ]
    for args, fragment in cases:
        assert_usage_error(invoke(*args), fragment)
        assert snapshot(w) == before, args


@pytest.mark.parametrize("out", [".", ".."])
def test_the_current_folder_or_its_parent_as_output_is_refused_before_any_work(tmp_path, monkeypatch, out):
    work = tmp_path / "here"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert_usage_error(invoke("train", "--out", out, "--force", *TINY_TRAIN), "is the current folder or holds it")
    assert (work / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_more_threads_than_cores_are_refused_before_any_work(tmp_path):
    out = tmp_path / "model"
    assert_usage_error(invoke("train", "--threads", 1024, "--out", out, *TINY_TRAIN), "is more than this machine's")
    assert not out.exists()


def test_output_overlapping_the_cache_is_refused(tmp_path):
    cache = Path(os.environ["ERASEDIFF_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "keep.txt").write_text("cached")
    before = snapshot(cache)
    assert_usage_error(invoke("audit", "--out", cache, "--force"), f"output folder '{cache}' is the cache folder",
                       "choose an --out outside the cache folder")
    assert_usage_error(invoke("train", "--out", cache / "mine", *TINY_TRAIN), "lies inside the cache folder")
    assert_usage_error(invoke("train", "--out", cache.parent, "--force", *TINY_TRAIN), "contains the cache folder")
    assert snapshot(cache) == before


# 3. outputs that cannot be written, or would replace a file or folder unasked


def test_unwritable_output_fails_before_any_work(tmp_path):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    assert_usage_error(invoke("train", "--out", "/proc/erasediff-x/out", *TINY_TRAIN), "cannot write", "/proc")
    assert_usage_error(invoke("train", "--out", dangling, *TINY_TRAIN), "is a symbolic link")
    assert_usage_error(invoke("evaluate", "--model", "m", "--json", dangling), "is a symbolic link")
    (tmp_path / "file").write_text("x")
    assert_usage_error(invoke("train", "--out", tmp_path / "file" / "out", *TINY_TRAIN), "is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file"] and not dangling.exists()
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_usage_error(invoke("train", "--out", locked / "a" / "out", *TINY_TRAIN), "is not writable")
        assert not any(locked.iterdir())


def test_file_outputs_refuse_folders_and_existing_files(tmp_path, saved_model):
    folder = tmp_path / "folder"
    folder.mkdir()
    metrics = tmp_path / "metrics.json"
    metrics.write_text("mine")
    results = tmp_path / "audit" / "results.json"
    results.parent.mkdir()
    results.write_text('{"schema_version": 1}')
    assert_usage_error(invoke("evaluate", "--model", saved_model, "--json", folder, "--force"), "is a folder")
    assert_usage_error(invoke("report", results, "--out", folder, "--force"), "is a folder")
    assert_usage_error(invoke("evaluate", "--model", saved_model, "--json", metrics), "already exists", "--force")
    assert_usage_error(invoke("report", results, "--out", metrics), "already exists", "--force")
    assert_usage_error(invoke("evaluate", "--model", saved_model, "--json", tmp_path / "no" / "m.json"),
                       "does not exist")
    # with --force the file passes the check: the error is now about the (missing) model
    assert_usage_error(invoke("evaluate", "--model", tmp_path / "none", "--json", metrics, "--force"), "none")
    assert metrics.read_text() == "mine" and not any(folder.iterdir())


def test_report_replaces_its_own_file_and_an_explicit_one_only_with_force(tmp_path, workspace):
    out = tmp_path / "audit"
    result = invoke(*audit_args(workspace, out))
    assert result.exit_code in (ExitCode.OK, ExitCode.GATE_FAILED, ExitCode.INCONCLUSIVE), result.output
    results, html = out / "results.json", out / "report.html"
    html.write_text("old")
    assert invoke("report", results).exit_code == ExitCode.OK
    assert html.read_text().startswith("<!")
    other = tmp_path / "other.html"
    other.write_text("mine")
    assert_usage_error(invoke("report", results, "--out", other), "already exists")
    assert other.read_text() == "mine"
    assert invoke("report", results, "--out", other, "--force").exit_code == ExitCode.OK
    assert other.read_text() == html.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit", "other.html"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# 4. leftovers: stale temporaries, SIGTERM, a symlinked --out


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_next_run_removes_temporaries_of_dead_runs_only(tmp_path):
    out = tmp_path / "ref"
    dead = dead_pid()
    stale = [tmp_path / f".ref.{dead}.abcd1234.tmp", tmp_path / f".ref.{dead}.abcd1234.old"]
    kept = [tmp_path / f".ref.{os.getpid()}.abcd1234.tmp", tmp_path / ".ref.x.tmp", tmp_path / f".refs.{dead}.a.tmp"]
    for path in stale + kept:
        path.mkdir()
        (path / "f").write_text("x")
    result = invoke("train", "--out", out, *TINY_TRAIN)
    assert result.exit_code == ExitCode.OK, result.output
    assert sorted(tmp_path.iterdir()) == sorted([out, *kept])


def test_symlinked_output_is_refused_with_force(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert_usage_error(invoke("train", "--out", link, "--force", *TINY_TRAIN), "is a symbolic link", str(real))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"] and link.resolve() == real
    assert [p.name for p in real.iterdir()] == ["keep.txt"]


def start_audit(workspace: dict[str, Path], out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from erasediff.cli import main; main()", *audit_args(workspace, out)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


def wait_for(process: subprocess.Popen, out: Path, inside: str, timeout: float = 60) -> None:
    """Poll until the process's temporary folder exists and holds ``inside`` (a glob; "" for nothing)."""
    deadline = time.monotonic() + timeout
    while not any(not inside or any(tmp.glob(inside)) for tmp in out.parent.glob(f".{out.name}.{process.pid}.*")):
        assert process.poll() is None, f"the run ended before '{inside}' appeared: {process.communicate()}"
        assert time.monotonic() < deadline, "the run did not reach the point"
        time.sleep(0.005)


def test_sigterm_is_one_line_exit_3_and_leaves_nothing(tmp_path, workspace):
    out = tmp_path / "audit"
    process = start_audit(workspace, out)
    wait_for(process, out, "images")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.RUNTIME
    assert stderr.strip().splitlines() == ["error: terminated"], stderr
    assert list(tmp_path.iterdir()) == []


# 5. kill -9 at three points: nothing is left but temporaries the next run removes


def test_killed_audits_leave_nothing_the_next_run_does_not_clean(tmp_path, workspace):
    out = tmp_path / "runs" / "audit"
    for point in ["", "images", "scores/*.csv"]:  # just started, models loaded, attacks done
        process = start_audit(workspace, out)
        wait_for(process, out, point)
        process.kill()
        process.wait()
        assert not out.exists()
        # only this run's temporary: each run removed the one the previous killed run left
        assert [tmp.name.split(".")[2] for tmp in temporaries(out)] == [str(process.pid)]
    result = invoke(*audit_args(workspace, out))
    assert result.exit_code in (ExitCode.OK, ExitCode.GATE_FAILED, ExitCode.INCONCLUSIVE), result.output
    assert temporaries(out) == [] and (out / "results.json").is_file()
    assert list(out.parent.iterdir()) == [out]


def test_output_folders_follow_the_umask(tmp_path):
    """A shared cache or a filed report is readable by colleagues as the user's umask says, not mkdtemp's 0700."""
    previous = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "results.json").write_text("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
