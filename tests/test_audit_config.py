import pytest

from audit.checks import evaluate_checks, verdict
from audit.config import AuditConfig, Thresholds, config_from_dict, load_config
from diffusion.errors import UsageError


def test_defaults_round_trip():
    config = config_from_dict({})
    assert config == AuditConfig()
    assert config_from_dict(config.to_dict()) == config


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("forget_classes: [3, 5]\nseed: 7\nthresholds:\n  mia_auc_tolerance: 0.05\n")
    config = load_config(path, {"seed": 9, "method": None})
    assert config.forget_classes == [3, 5] and config.seed == 9 and config.method == "erasediff"
    assert config.thresholds.mia_auc_tolerance == 0.05 and isinstance(config.thresholds, Thresholds)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"forget_class": [3]}, "unknown config key 'forget_class'; allowed keys: model, unlearned"),
        ({"thresholds": {"auc_tol": 0.1}}, "unknown config key 'thresholds.auc_tol'; allowed keys: mia_auc"),
        ({"seed": "seven"}, "config key 'seed' must be int; got 'seven'"),
        ({"seed": True}, "config key 'seed' must be int"),
        ({"forget_classes": [3, "x"]}, r"config key 'forget_classes\[1\]' must be int"),
        ({"forget_classes": 3}, "config key 'forget_classes' must be a list"),
        ({"thresholds": 3}, "config key 'thresholds' must be a mapping"),
        ({"forget_classes": []}, "the forget set is empty"),
        ({"eval_steps": 0}, "config key 'eval_steps' must be a positive integer"),
    ],
)
def test_strict_validation(data, message):
    with pytest.raises(UsageError, match=message):
        config_from_dict(data)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("seed: [1\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "code.yaml").write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UsageError, match="not valid YAML"):  # safe_load refuses to build objects
        load_config(tmp_path / "code.yaml")


def _metrics(auc, tpr):
    return {"auc": auc, "tpr_at_1pct_fpr": tpr, "fpr_at_1pct_fpr": 0.01}


def _results(unlearned_auc, forgotten_acc, fd=2.2, with_reference=True):
    models = {"original": (0.8, 0.3, 0.98, 0.98, 2.0), "unlearned": (unlearned_auc, 0.02, forgotten_acc, 0.97, fd)}
    if with_reference:
        models["retrained"] = (0.45, 0.01, 0.05, 0.97, 2.2)
    return {
        "attacks": {"loss": {role: _metrics(v[0], v[1]) for role, v in models.items()}},
        "extraction": {role: {"num_forget_extracted": 3 if role == "original" else 0} for role in models},
        "utility": {role: {"forgotten_accuracy": v[2], "retained_accuracy": v[3], "retained_fd": v[4]}
                    for role, v in models.items()},
    }


def test_checks_pass_when_close_to_retrained():
    checks = evaluate_checks(_results(0.48, 0.03), Thresholds())
    assert verdict(checks) == "PASS", [c.detail for c in checks if not c.passed]
    assert {c.name for c in checks} == {"mia_auc[loss]", "mia_tpr[loss]", "extraction", "forgotten_generation",
                                       "retained_accuracy", "retained_fd"}


def test_checks_are_two_sided_and_explain_failures():
    below = evaluate_checks(_results(0.2, 0.03), Thresholds())  # forget loss pushed far ABOVE heldout
    failed = [c for c in below if not c.passed]
    assert verdict(below) == "FAIL" and [c.name for c in failed] == ["mia_auc[loss]"]
    assert "off by -0.250" in failed[0].detail
    noop = evaluate_checks(_results(0.8, 0.98), Thresholds())
    assert {c.name for c in noop if not c.passed} >= {"mia_auc[loss]", "forgotten_generation"}
    worse = evaluate_checks(_results(0.48, 0.03, fd=2.7), Thresholds())
    assert [c.name for c in worse if not c.passed] == ["retained_fd"]


def test_checks_without_reference_fall_back_to_chance():
    checks = evaluate_checks(_results(0.52, 0.05, with_reference=False), Thresholds())
    auc = next(c for c in checks if c.name == "mia_auc[loss]")
    assert auc.target == 0.5 and auc.passed
    assert verdict([]) == "FAIL"
