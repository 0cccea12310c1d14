"""Canaries end to end on tiny real models: make, train with them, delete them with a request, audit them; and the
refusals (another canary file, a changed assignment)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffusion.canaries import read_canaries, read_included, read_sealed
from diffusion.model import DiffusionModel
from erasediff.cli import main

TINY = ["--steps", "3", "--batch-size", "16", "--block-out-channels", "8,16", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("canaries")
    assert invoke("canaries", "make", "--count", 40, "--seed", 3, "--out", root / "c", "--quiet").exit_code == 0
    assert invoke("canaries", "make", "--count", 40, "--seed", 4, "--out", root / "other", "--quiet").exit_code == 0
    result = invoke("train", "--canaries", root / "c", "--out", root / "original", *TINY)
    assert result.exit_code == 0, result.output
    result = invoke("unlearn", "--model", root / "original", "--canaries", root / "c", "--method", "erasediff",
                    "--steps", 2, "--out", root / "erased", "--quiet")
    assert result.exit_code == 0, result.output
    return root


def test_the_assignment_is_sealed_and_the_models_record_only_its_commitment(planted):
    canaries = read_canaries(planted / "c")
    sealed = read_sealed(planted / "c", canaries)
    included = read_included(planted / "c", canaries)
    assert np.array_equal(sealed.included, included) and 0 < included.size < 40
    original = DiffusionModel.read_metadata(planted / "original")
    assert original["canaries"] == {"commitment": canaries.commitment, "num_canaries": 40}
    assert "included" not in json.dumps(original)
    erased = DiffusionModel.read_metadata(planted / "erased")
    assert erased["canaries"]["commitment"] == canaries.commitment
    assert set(included.tolist()) <= set(erased["forget_spec"]["sample_ids"])  # deleted in the same request
    assert erased["num_forget"] == included.size


def test_the_canary_audit_never_passes_a_noop_and_writes_its_test(planted, tmp_path):
    result = invoke("canaries", "audit", "--canaries", planted / "c", "--model", planted / "original",
                    "--unlearned", planted / "original", "--attacks", "loss", "--out", tmp_path / "audit", "--quiet")
    assert result.exit_code in (1, 4), result.output  # FAIL (found) or INCONCLUSIVE (a 3-step model: no power)
    results = json.loads((tmp_path / "audit" / "canary_results.json").read_text())
    assert results["verdict"] in ("FAIL", "INCONCLUSIVE") and results["verdict"] in result.output
    for role in ("unlearned", "original"):
        section = results[role]
        assert 0.0 < section["p_value"] <= 1.0 and section["test_auc"] <= section["auc_upper_bound"] <= 1.0
        assert 20 <= section["num_deleted"] + section["num_never_included"] <= 21  # the test half only
    assert results["unlearned"] == results["original"]  # the same model, the same canaries, the same numbers
    html = (tmp_path / "audit" / "report.html").read_text()
    assert results["verdict"] in html and "What this certifies" in html


def test_a_model_trained_with_other_canaries_or_a_changed_assignment_is_refused(planted, tmp_path):
    result = invoke("canaries", "audit", "--canaries", planted / "other", "--model", planted / "original",
                    "--unlearned", planted / "erased", "--out", tmp_path / "a", "--quiet")
    assert result.exit_code == 2 and "trained with other canaries" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    tampered = tmp_path / "tampered"
    (tampered / "sealed").mkdir(parents=True)
    for name in ("canaries.json", "included_ids.txt"):
        (tampered / name).write_text((planted / "c" / name).read_text())
    sealed = json.loads((planted / "c" / "sealed" / "assignment.json").read_text())
    sealed["included"] = sealed["included"][1:]
    (tampered / "sealed" / "assignment.json").write_text(json.dumps(sealed))
    result = invoke("canaries", "audit", "--canaries", tampered, "--model", planted / "original",
                    "--unlearned", planted / "erased", "--out", tmp_path / "b", "--quiet")
    assert result.exit_code == 2 and "assignment was changed" in result.output


def test_the_audit_tests_the_canaries_beside_the_references(planted, tmp_path):
    """``erasediff audit --canaries``: the included canaries join the deletion request, the canary test runs on
    every model as a probe (its section equal to the canary audit's own), and its check joins the verdict."""
    for k in (1, 2):  # references: retrained without the request (the included canaries), tiny
        result = invoke("unlearn", "--model", planted / "original", "--canaries", planted / "c", "--method",
                        "retrain", "--steps", 3, "--seed", k, "--out", tmp_path / f"reference{k}", "--quiet")
        assert result.exit_code == 0, result.output
    config = tmp_path / "audit.yaml"
    config.write_text("eval_samples_per_class: 4\nforgotten_samples_per_class: 4\nextraction_samples_per_class: 4\n"
                      "eval_steps: 4\nattacks: [loss, sima]\n")
    common = ["--model", planted / "original", "--unlearned", planted / "erased", "--quiet"]
    result = invoke("audit", "--config", config, "--canaries", planted / "c", "--retrained", tmp_path / "reference1",
                    "--retrained", tmp_path / "reference2", "--out", tmp_path / "audit", *common)
    assert result.exit_code in (0, 1, 4), result.output
    results = json.loads((tmp_path / "audit" / "results.json").read_text())
    assert set(results["canary"]) == {"original", "unlearned", "reference_1", "reference_2"}
    included = read_included(planted / "c", read_canaries(planted / "c")).tolist()
    assert results["forget_spec"]["sample_ids"] == sorted(included)  # the request: the included canaries
    check = next(c for c in results["checks"] if c["name"] == "canary")
    standalone = invoke("canaries", "audit", "--canaries", planted / "c", "--out", tmp_path / "alone", *common)
    alone = json.loads((tmp_path / "alone" / "canary_results.json").read_text())
    assert results["canary"]["unlearned"] == alone["unlearned"] and results["canary"]["original"] == alone["original"]
    assert check["decision"] == alone["verdict"] and standalone.exit_code in (0, 1, 4)
    assert "Canaries: deleted vs never included" in (tmp_path / "audit" / "report.html").read_text()

    result = invoke("audit", "--config", config, "--canaries", planted / "other", "--retrained",
                    tmp_path / "reference1", "--out", tmp_path / "refused", *common)
    assert result.exit_code == 2 and "trained with other canaries" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()


def test_your_own_canaries_are_files_of_the_data_folder_and_train_exactly_when_included(tmp_path, digits):
    from diffusion.canaries import canary_split
    from diffusion.data import load_image_folder
    from diffusion.splits import make_splits

    from .conftest import write_digit_folder

    data = write_digit_folder(tmp_path / "data", digits)
    dataset = load_image_folder(data, 8)
    chosen = [name for name in dataset.files if name.startswith("digit1/")][:16]
    (tmp_path / "mine.txt").write_text("# my canaries\n" + "\n".join(chosen) + "\n")
    result = invoke("canaries", "make", "--data", data, "--images", tmp_path / "mine.txt", "--seed", 5,
                    "--out", tmp_path / "c", "--quiet")
    assert result.exit_code == 0, result.output
    canaries = read_canaries(tmp_path / "c")
    assert sorted(dataset.files[i] for i in canaries.ids) == sorted(chosen)
    included = read_included(tmp_path / "c", canaries)
    files = (tmp_path / "c" / "included_files.txt").read_text().split()
    assert sorted(files) == sorted(dataset.files[i] for i in included)  # for a trainer outside the project
    plain = make_splits(dataset.labels, 0)
    assert np.isin(canaries.ids, plain.members).any()  # some of the user's canaries fall among the members ...
    splits, _, _ = canary_split(tmp_path / "c", dataset, plain)
    never = np.setdiff1d(canaries.ids, included)
    assert np.isin(included, splits.members).all() and not np.isin(never, splits.members).any()  # ... not trained
    assert not np.isin(canaries.ids, splits.heldout).any()
    result = invoke("train", "--data", data, "--canaries", tmp_path / "c", "--out", tmp_path / "model", *TINY)
    assert result.exit_code == 0, result.output
    assert DiffusionModel.read_metadata(tmp_path / "model")["canaries"]["commitment"] == canaries.commitment

    folder = invoke("canaries", "make", "--data", data, "--images", data / "digit2", "--out", tmp_path / "d",
                    "--quiet")
    assert folder.exit_code == 0, folder.output
    assert all(dataset.files[i].startswith("digit2/") for i in read_canaries(tmp_path / "d").ids)


@pytest.mark.parametrize(("args", "message"), [
    (["--count", 8, "--images", "LIST"], "not both"),
    (["--images", "STRANGER"], "is not an image of the data folder"),
    (["--images", "TWICE"], "is given twice"),
    (["--images", "OUTSIDE"], "is not inside the data folder"),
])
def test_your_own_canaries_are_refused_in_one_line_when_they_are_not_the_datas(tmp_path, digits, args, message):
    from .conftest import write_digit_folder

    data = write_digit_folder(tmp_path / "data", digits, classes=(0, 1))
    first = sorted((data / "digit0").iterdir())[:4]
    lists = {"LIST": [f"digit0/{p.name}" for p in first], "STRANGER": ["digit0/nope.png"],
             "TWICE": [f"digit0/{first[0].name}"] * 2}
    for name, lines in lists.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    (tmp_path / "OUTSIDE").mkdir()
    args = [tmp_path / a if a in (*lists, "OUTSIDE") else a for a in args]
    result = invoke("canaries", "make", "--data", data, *args, "--out", tmp_path / "c", "--quiet")
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_your_own_canaries_need_a_data_folder(tmp_path):
    (tmp_path / "list.txt").write_text("0.png\n")
    result = invoke("canaries", "make", "--images", tmp_path / "list.txt", "--out", tmp_path / "c", "--quiet")
    assert result.exit_code == 2 and "has no files" in result.output, result.output
