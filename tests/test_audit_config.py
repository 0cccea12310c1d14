import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.config import (
    MAX_CONFIG_VALUES,
    AuditConfig,
    Thresholds,
    config_from_dict,
    load_config,
    read_yaml_value,
)
from diffusion.errors import UsageError
from erasediff.cli import main
from erasediff.cli.unlearn import parse_params


def test_defaults_round_trip():
    config = config_from_dict({})
    assert config == AuditConfig()
    assert config_from_dict(config.to_dict()) == config


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("forget_classes: [3, 5]\nseed: 7\nthresholds:\n  mia_auc_margin: 0.05\n"
                    "method_params:\n  lr: 1e-5\n  forget_target: relabel\n")
    config = load_config(path, {"seed": 9, "method": None})
    assert config.forget_classes == [3, 5] and config.seed == 9 and config.method == "erasediff"
    assert config.method_params == {"lr": 1e-5, "forget_target": "relabel"}  # 1e-5: a number, as YAML 1.2 reads it
    assert config.thresholds.mia_auc_margin == 0.05 and isinstance(config.thresholds, Thresholds)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"forget_class": [3]}, "unknown config key 'forget_class'; allowed keys: model, unlearned"),
        ({"thresholds": {"auc_tol": 0.1}}, "unknown config key 'thresholds.auc_tol'; allowed keys: confidence"),
        ({"seed": "seven"}, "config key 'seed' must be int; got 'seven'"),
        ({"seed": True}, "config key 'seed' must be int"),
        ({"forget_classes": [3, "x"]}, r"config key 'forget_classes\[1\]' must be int"),
        ({"forget_classes": 3}, "config key 'forget_classes' must be a list"),
        ({"thresholds": 3}, "config key 'thresholds' must be a mapping"),
        ({"forget_classes": []}, "the forget set is empty"),
        ({"eval_steps": 0}, "config key 'eval_steps' must be a positive integer"),
        ({"eval_steps": 10**5000}, r"'eval_steps' must be a positive integer in \[1, 2\*\*31\); got <an integer"),
        ({"attacks": []}, "an audit needs at least one membership attack; list some under 'attacks'"),
        ({"attacks": ["loss", "../x"]}, r"config key 'attacks\[1\]' must be an attack name"),
        ({"attacks": ["loss", "loss"]}, "config key 'attacks' names 'loss' twice"),
        ({"member_fraction": 1}, r"config key 'member_fraction' must be a fraction in \(0, 1\); got 1.0"),
        ({"member_fraction": 0.0}, "config key 'member_fraction' must be a fraction"),
        ({"split_seed": 2**32}, "config key 'split_seed' must be an integer in"),
        ({"split_seed": -1}, "config key 'split_seed' must be an integer in"),
        ({"seed": 2**63}, r"config key 'seed' must be an integer in \[0, 2\*\*63\); got 9223372036854775808"),
        ({"seed": -(10**5000)}, "config key 'seed' must be an integer in .* got <an integer of about 5001 digits>"),
        ({"forget_classes": [1, -3]}, r"config key 'forget_classes\[1\]' must be a class id"),
        ({"member_fraction": 10**400}, "config key 'member_fraction' must be a float; got <an integer"),
        ({"thresholds": {"mia_auc_margin": float("inf")}}, "'thresholds.mia_auc_margin' must be a margin"),
        ({"thresholds": {"mia_auc_margin": 0.5}}, "'thresholds.mia_auc_margin' must be a margin in"),
        ({"thresholds": {"mia_auc_margin": 0}}, r"'thresholds.mia_auc_margin' must be a margin in \(0, 0.5\)"),
        ({"thresholds": {"mia_auc_margin": -0.1}}, "'thresholds.mia_auc_margin' must be a margin in"),
        ({"thresholds": {"mia_tpr_margin": float("nan")}}, "'thresholds.mia_tpr_margin' must be .* got nan"),
        ({"thresholds": {"forgotten_accuracy_margin": -0.1}}, "'thresholds.forgotten_accuracy_margin'"),
        ({"thresholds": {"resurrection_margin": 1}}, "'thresholds.resurrection_margin' must be a margin"),
        ({"thresholds": {"retained_accuracy_drop": 2}}, "'thresholds.retained_accuracy_drop' must be a margin"),
        ({"thresholds": {"confidence": 1.0}}, "'thresholds.confidence' must be a confidence level"),
        ({"retrain_references": -1}, r"'retrain_references' must be a number of references in \[0, 64\]"),
        ({"thresholds": {"retained_fd_ratio": 0.9}}, r"'thresholds.retained_fd_ratio' must be a ratio in \[1, 10\]"),
        ({"thresholds": {"retained_fd_ratio": float("inf")}}, "'thresholds.retained_fd_ratio' must be a ratio"),
        ({"thresholds": {"retained_fd_ratio": 1e308}}, "beyond it the check can never fail"),
        ({"thresholds": {"extraction_margin": 2147483647}}, "'thresholds.extraction_margin' must be below"),
        ({"thresholds": {"extraction_margin": 100}}, "a margin of every generated sample can never fail; got 100"),
        ({"thresholds": {"extraction_margin": -1}}, "'thresholds.extraction_margin' must be a number of images"),
        ({"thresholds": {"extraction_margin": 1.5}}, "'thresholds.extraction_margin' must be int"),
        ({"thresholds": {"relearning_margin": 0}}, "'thresholds.relearning_margin' must be a margin"),
        ({"preset": "fast"}, "config key 'preset' must be one of: default, thorough; got 'fast'"),
        ({"calibration_images": -1}, r"'calibration_images' must be a number of images in \[0, 2\*\*31\)"),
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


def test_limits_allow_the_edges():
    config = config_from_dict({"seed": 2**63 - 1, "split_seed": 2**32 - 1, "member_fraction": 0.99,
                               "thresholds": {"mia_auc_margin": 0.49, "retained_fd_ratio": 1, "extraction_margin": 0}})
    assert config.seed == 2**63 - 1 and config.thresholds.retained_fd_ratio == 1.0


def test_error_messages_quote_values_cut_short():
    value = {"x" * 1000: list(range(10**6))}
    with pytest.raises(UsageError) as caught:
        config_from_dict({"thresholds": {"mia_auc_margin": 0.1, "retained_fd_ratio": value}})
    assert len(str(caught.value)) < 160 and "..." in str(caught.value)
    with pytest.raises(UsageError) as caught:
        config_from_dict({"y" * 10**6: 1})
    allowed = ", ".join(f.name for f in dataclasses.fields(AuditConfig))  # the message lists them: the rest is bounded
    assert "unknown config key 'yyy" in str(caught.value) and len(str(caught.value)) < len(allowed) + 160


def _laughs(levels: int = 9) -> str:
    """The billion laughs: each level a list of nine aliases to the level before."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [{','.join([f'*{chr(96 + i)}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nthresholdz: *{chr(96 + levels)}\n"


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_laughs())
    assert len(path.read_bytes()) < 500
    with pytest.raises(UsageError, match=f"config file '.*bomb.yaml' expands to more than {MAX_CONFIG_VALUES} "
                                         r"values \(YAML aliases\?\)"):
        load_config(path)
    path.write_text("s: &s '" + "x" * 100_000 + "'\nforget_label: [" + ", ".join(["*s"] * 20) + "]\n")
    with pytest.raises(UsageError, match="expands to more than 1000000 characters"):
        load_config(path)
    path.write_text("a: &a [*a]\n")  # an alias to itself: nests without end
    with pytest.raises(UsageError, match="nests deeper than 50 levels"):
        load_config(path)


def test_aliases_within_bounds_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("method_params: {k: &c [3, 5]}\nforget_classes: *c\n")
    assert load_config(path).forget_classes == [3, 5]


def test_deep_nesting_is_a_usage_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match=r"config file '.*deep\.yaml' nests deeper than 50 levels"):
        load_config(path)


def test_huge_integers_name_their_key(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("thresholds:\n  extraction_margin: " + "9" * 5000 + "\n")
    with pytest.raises(UsageError, match=r"sets config key 'thresholds\.extraction_margin' to an integer of 5000"):
        load_config(path)
    path.write_text("seed: 0x" + "f" * 38 + "\n")  # short enough to read, far too large for a seed
    with pytest.raises(UsageError, match=r"config key 'seed' must be an integer in .* got <an integer of about 46 "):
        load_config(path)


@pytest.mark.parametrize("content, message", [
    ("folder", "is not a regular file"),
    ("/dev/zero", "is not a regular file"),
    (bytes(range(256)), r"is not UTF-8 text \(byte 0x80 at offset 128\)"),
    (b"seed: 1\x00\n", "is not valid YAML: unacceptable character #x0000"),
    (b"#" * 1_000_001, "is larger than 1,000,000 bytes"),
], ids=["folder", "dev-zero", "binary", "nul", "too-large"])
def test_files_that_are_not_configs(tmp_path, content, message):
    path = Path(content) if content == "/dev/zero" else tmp_path / "c.yaml"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as caught:
        load_config(path)
    assert "not found" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text", [_laughs(), "[" * 100_000 + "]" * 100_000])
def test_the_audit_command_refuses_bounded_configs_in_one_line(tmp_path, text):
    path = tmp_path / "audit.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["audit", "--config", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and len(result.output) < 300, result.output
    assert not (tmp_path / "out").exists()


def test_presets_name_reference_recipes():
    from diffusion.training import TrainConfig

    assert TrainConfig.preset("default") == TrainConfig()
    assert TrainConfig.preset("thorough").steps == 6000 > TrainConfig().steps
    with pytest.raises(UsageError, match="unknown preset 'fast'; expected one of: default, thorough"):
        TrainConfig.preset("fast")


@pytest.mark.parametrize("text, message", [
    ("forget_classes: [012]\n", "sets config key 'forget_classes[0]' to 012, an integer YAML 1.1 and 1.2 read"),
    ("seed: 1:30\n", "sets config key 'seed' to 1:30"),
    ("seed: 1_000\n", "sets config key 'seed' to 1_000"),
    ("seed: 1\nseed: 2\n", "gives the key 'seed' twice (lines 1 and 2)"),
    ("thresholds:\n  confidence: 0.9\n  confidence: 0.8\n", "gives the key 'confidence' twice (lines 2 and 3)"),
])
def test_ambiguous_integers_and_repeated_keys_are_refused(tmp_path, text, message):
    path = tmp_path / "audit.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_config(path)


def test_plain_integers_still_read_and_params_refuse_ambiguous_ones():
    assert config_from_dict(read_yaml_value("seed: 10\nforget_classes: [0, 3]\n")).seed == 10
    assert read_yaml_value("0x10") == 16 and read_yaml_value("-3") == -3
    with pytest.raises(UsageError, match="--param steps: cannot read the value '010': sets a value to 010, an "):
        parse_params(("steps=010",))
