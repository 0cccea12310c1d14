"""Every check before any work: bad parameters, a model that does not fit the data, data it was not trained on,
and caches keyed by content (an edited data folder never reuses a stale model)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from audit.config import AuditConfig
from audit.references import check_reference
from audit.run import retrained_model
from diffusion.data import load_image_folder
from diffusion.errors import UsageError
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.provenance import check_provenance, load_data_for_model
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from erasediff.cli import main
from unlearn import METHODS

from .conftest import TINY, drawn_split_record, write_digit_folder


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_usage_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits):
    return write_digit_folder(tmp_path_factory.mktemp("data") / "digits3", digits)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the audit starts training the reference or unlearning."""
    def trained(*args, **kwargs):
        raise AssertionError("the audit started heavy work before checking its inputs")

    monkeypatch.setattr("audit.run.load_or_train_reference", trained)
    monkeypatch.setattr("audit.run.load_or_train_judge", trained)


@pytest.mark.parametrize("method_params, message", [
    ("{lr: -1}", "The 'lr' parameter of EraseDiff must be a float in (0, inf). Got -1 instead."),
    ("{forget_target: noise}", "'forget_target' parameter of EraseDiff must be one of"),
    ("{alpha: 1}", "'alpha' is not a parameter of unlearning method 'erasediff'"),
])
def test_bad_method_parameters_fail_before_the_reference_trains(tmp_path, no_training, method_params, message):
    config = tmp_path / "audit.yaml"
    config.write_text(f"method_params: {method_params}\n")
    out = tmp_path / "out"
    assert_one_line_usage_error(invoke("audit", "--config", config, "--out", out, "--quiet"), message)
    assert not out.exists()


def test_a_method_that_cannot_serve_the_task_fails_before_training(tmp_path, no_training, splits):
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(i) for i in splits.members[:5]))
    result = invoke("audit", "--method", "selective_amnesia", "--forget-ids", ids, "--out", tmp_path / "out",
                    "--quiet")
    assert_one_line_usage_error(result, "selective_amnesia needs a forget task naming at least one class")


def test_a_model_of_another_shape_is_refused_before_training(tmp_path, no_training):
    DiffusionModel.create(sample_size=16, num_classes=10, device="cpu", **TINY).save(tmp_path / "m16",
                                                                                      drawn_split_record())
    result = invoke("audit", "--model", tmp_path / "m16", "--out", tmp_path / "out", "--quiet")
    assert_one_line_usage_error(result, "digits", "1x8x8")


def test_data_takes_its_shape_from_a_16x16_model(tmp_path, folder):
    model = DiffusionModel.create(sample_size=16, num_classes=3, device="cpu", **TINY)
    model.save(tmp_path / "m16", drawn_split_record(load_image_folder(folder, size=8).labels))
    dataset = load_data_for_model(str(folder), model)
    assert dataset.image_shape == (1, 16, 16) == model.image_shape
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", tmp_path / "m16", "--data", folder, "--forget-class", 1,
                    "--steps", 2, "--batch-size", 8, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert load_model(out).image_shape == (1, 16, 16)
    bad = invoke("unlearn", "--model", tmp_path / "m16", "--forget-class", 1, "--out", tmp_path / "x", "--quiet")
    assert_one_line_usage_error(bad, "1x8x8")
    assert not (tmp_path / "x").exists()


def test_a_model_with_other_classes_is_refused(tmp_path, folder):
    DiffusionModel.create(num_classes=5, device="cpu", **TINY).save(tmp_path / "m5")
    for command in (["evaluate"], ["attack", "--out", tmp_path / "a"], ["unlearn", "--forget-class", 1,
                                                                        "--out", tmp_path / "u"]):
        result = invoke(*command, "--model", tmp_path / "m5", "--data", folder, "--quiet")
        assert_one_line_usage_error(result, "conditioned on 5 classes", "has 3")


def test_recorded_data_must_match_unless_allowed(tmp_path, folder, digits):
    data = load_image_folder(folder, size=8)
    DiffusionModel.create(num_classes=3, device="cpu", **TINY).save(
        tmp_path / "m", {"data": {"name": "elsewhere", "fingerprint": "0" * 64},
                         **drawn_split_record(data.labels)})
    args = ["unlearn", "--model", tmp_path / "m", "--data", folder, "--forget-class", 1, "--steps", 2,
            "--batch-size", 8, "--quiet"]
    assert_one_line_usage_error(invoke(*args, "--out", tmp_path / "u1"), "trained on other data ('elsewhere'",
                                "--allow-other-data")
    result = invoke(*args, "--out", tmp_path / "u2", "--allow-other-data")
    assert result.exit_code == 0, result.output
    same = {"data": {"name": data.name, "fingerprint": data.fingerprint()}}
    check_provenance(same, "m", data, make_splits(data.labels, 0))  # its own data: fine
    other_split = {"splits": make_splits(data.labels, 1).to_dict()}
    with pytest.raises(UsageError, match="another member split"):
        check_provenance(other_split, "m", data, make_splits(data.labels, 0))


def test_retrained_cache_is_keyed_by_content_not_path(tmp_path, digits):
    folder = write_digit_folder(tmp_path / "data", digits)
    original = DiffusionModel.create(num_classes=3, device="cpu", **TINY)
    retrain = METHODS.make("retrain", steps=2)

    def retrained():
        data = load_image_folder(folder, size=8)
        splits = make_splits(data.labels, 0)
        spec = ForgetSpec(classes=(1,))
        task = ForgetTask.from_spec(data, splits, spec)
        return retrained_model(retrain, original, task, (data, splits, spec), seed=5, quiet=True)[1]

    first = retrained()
    again = retrained()
    assert not first["cached"] and again == {**first, "cached": True}
    next(iter((folder / "digit2").iterdir())).unlink()  # the same path, edited content
    edited = retrained()
    assert not edited["cached"] and edited["source"] != first["source"]


def test_a_retrained_reference_of_another_shape_is_refused_before_training(tmp_path, no_training, folder):
    DiffusionModel.create(num_classes=3, device="cpu", **TINY).save(
        tmp_path / "m8", drawn_split_record(load_image_folder(folder, size=8).labels))
    DiffusionModel.create(sample_size=16, num_classes=3, device="cpu", **TINY).save(tmp_path / "m16")
    out = tmp_path / "out"
    result = invoke("audit", "--model", tmp_path / "m8", "--data", folder, "--forget-class", 1,
                    "--retrained", tmp_path / "m8", "--retrained", tmp_path / "m16", "--out", out, "--quiet")
    assert_one_line_usage_error(result, "the audit's reference_2 model", "(1, 16, 16)")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--references", 65], "'retrain_references' must be a number of references in [0, 64]"),
])
def test_bad_reference_counts_are_refused(tmp_path, args, message):
    out = tmp_path / "out"
    assert_one_line_usage_error(invoke("audit", *args, "--out", out, "--quiet"), message)
    assert not out.exists()


def test_a_margin_of_zero_is_refused(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text("thresholds: {mia_auc_margin: 0}\n")
    out = tmp_path / "out"
    assert_one_line_usage_error(invoke("audit", "--config", config, "--out", out, "--quiet"),
                                "'thresholds.mia_auc_margin' must be a margin in (0, 0.5)")
    assert not out.exists()


def test_an_attack_that_needs_calibration_without_it_fails_before_training(tmp_path, no_training):
    out = tmp_path / "out"
    result = invoke("audit", "--attacks", "loss,secmi_nn", "--calibration-images", 0, "--out", out, "--quiet")
    assert_one_line_usage_error(result, "attack(s) secmi_nn learn from a calibration set; set calibration_images > 0")
    assert not out.exists()


def test_too_few_images_to_calibrate_fail_before_training(tmp_path, no_training, folder):
    """Erasing one class of a small folder leaves few retained members: the audit says so and names the way out."""
    config = tmp_path / "audit.yaml"
    config.write_text(f"data: {folder}\nforget_classes: [1]\nmember_fraction: 0.02\n")
    out = tmp_path / "out"
    result = invoke("audit", "--config", config, "--out", out, "--quiet")
    assert_one_line_usage_error(result, "too few images to fit the attacks on", "set calibration_images 0")
    assert not out.exists()


@pytest.fixture(scope="module")
def reference_candidates(tmp_path_factory, folder):
    """Tiny models for the reference checks: an original, an EraseDiff erasure of class 1 made from it by the CLI,
    a model recorded as retrained without class 2, one recorded as retrained without class 1, and one with no
    record."""
    root = tmp_path_factory.mktemp("references")
    DiffusionModel.create(num_classes=3, seed=0, device="cpu", **TINY).save(
        root / "original", drawn_split_record(load_image_folder(folder, 8).labels))
    result = invoke("unlearn", "--model", root / "original", "--data", folder, "--forget-class", 1, "--steps", 1,
                    "--batch-size", 4, "--out", root / "erased", "--quiet")
    assert result.exit_code == 0, result.output
    splits = make_splits(load_image_folder(folder, 8).labels, 0)
    for name, classes, seed in [("retrained_2", (2,), 1), ("retrained_1", (1,), 2)]:
        DiffusionModel.create(num_classes=3, seed=seed, device="cpu", **TINY).save(
            root / name, {"role": "retrained", "forget_spec": ForgetSpec(classes=classes).to_dict(),
                          "splits": splits.to_dict()})
    DiffusionModel.create(num_classes=3, seed=3, device="cpu", **TINY).save(root / "unrecorded")
    (root / "unrecorded" / "erasediff.json").unlink()
    return root


@pytest.mark.parametrize("reference, message", [
    ("erased", "has the same weights as the unlearned model"),
    ("original", "has the same weights as the original model"),
    ("retrained_2", "was retrained without class 2, not without this audit's forget set (class 1)"),
    ("fine-tuned", "records that it was made by 'erasediff' from another model"),
    ("unrecorded", "records no retraining without this forget set"),
])
def test_a_reference_that_is_not_a_retrain_without_this_forget_set_is_refused(
        tmp_path, no_training, folder, reference_candidates, reference, message):
    """Known answers for the audit's null: the unlearned model, the original, a model retrained for another forget
    set and a fine-tuned model are refused as references before any work; a model with no record needs the user's
    declaration."""
    root = reference_candidates
    unlearned = root / ("original" if reference == "fine-tuned" else "erased")
    given = root / ("erased" if reference == "fine-tuned" else reference)
    out = tmp_path / "out"
    result = invoke("audit", "--model", root / "original", "--unlearned", unlearned, "--data", folder,
                    "--forget-class", 1, "--retrained", given, "--retrained", root / "retrained_1", "--out", out,
                    "--quiet")
    assert_one_line_usage_error(result, message)
    assert not out.exists()


def test_references_given_twice_are_refused_and_a_declared_one_is_accepted(tmp_path, folder, reference_candidates):
    root = reference_candidates
    args = ["audit", "--model", root / "original", "--unlearned", root / "erased", "--data", folder,
            "--forget-class", 1, "--out", tmp_path / "out", "--quiet"]
    assert_one_line_usage_error(invoke(*args, "--retrained", root / "retrained_1", "--retrained",
                                       root / "retrained_1"), "has the same weights as reference")
    spec = ForgetSpec(classes=(1,))
    declared = check_reference("x", "f", {}, spec, {}, declared=True)
    assert not declared.verified and "declared" in declared.how
    assert check_reference("x", "f", DiffusionModel.read_metadata(root / "retrained_1"), spec, {}, False).verified
    assert AuditConfig().unverified_references is False
