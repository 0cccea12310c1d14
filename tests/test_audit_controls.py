"""Known-answer controls of the audit, end to end on small real models.

An auditor that certifies a no-op is worse than none: the original model presented as "unlearned" must never
PASS, and a model retrained from scratch without the forget set must never FAIL against two independently
retrained references. The data is a 3-class image folder made from the bundled digits (so models train in
seconds); both controls use the default margins. Small models leak little, so the audit may lack the power to
PASS anything here: INCONCLUSIVE is a right answer for the retrained control, never FAIL.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from audit.cli import main
from diffusion.data import load_image_folder
from diffusion.reference import train_on_ids
from diffusion.splits import ForgetSpec, make_splits
from diffusion.training import TrainConfig

from .conftest import write_digit_folder

pytestmark = pytest.mark.slow  # trains three small models and runs three audits (about a minute)

FORGET_CLASS = 1
LABEL = "<script>alert(1)</script> request"
SMALL = TrainConfig(steps=500, batch_size=64, lr=2e-3, ema_decay=0.99, block_out_channels=(16, 32),
                    num_train_timesteps=100)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, digits):
    """Digits of classes 0-2 as an image folder, and four small models trained on it."""
    root = tmp_path_factory.mktemp("controls")
    folder = write_digit_folder(root / "digits3", digits)
    data = load_image_folder(folder, size=8)
    splits = make_splits(data.labels, seed=0)
    spec = ForgetSpec(classes=(FORGET_CLASS,))
    retain = spec.retain_ids(data.labels, splits)
    paths = {}
    for name, ids, seed in [("original", splits.members, 0), ("retrained_a", retain, 1), ("retrained_b", retain, 2),
                            ("retrained_c", retain, 3)]:
        trained = train_on_ids(data, ids, TrainConfig(**{**SMALL.to_dict(), "seed": seed}), role=name, quiet=True)
        trained.model.save(root / name, trained.record)
        paths[name] = root / name
    config = root / "audit.yaml"
    config.write_text(
        f"data: {folder}\nforget_classes: [{FORGET_CLASS}]\nextraction_samples_per_class: 30\n"
        "eval_samples_per_class: 40\neval_steps: 20\n"
    )
    return {"root": root, "config": config, **paths}


def _audit(workspace, unlearned, out, *extra):
    args = ["audit", "--config", workspace["config"], "--model", workspace["original"], "--unlearned", unlearned,
            "--retrained", workspace["retrained_b"], "--retrained", workspace["retrained_c"], "--out", out, "--quiet",
            *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def noop(workspace):
    """The original model presented as "unlearned": the audit's own output folder, and the CLI result."""
    out = workspace["root"] / "noop"
    return out, _audit(workspace, workspace["original"], out, "--forget-label", LABEL)


def test_noop_unlearning_fails_the_audit(noop):
    out, result = noop
    assert result.exit_code == 1, result.output
    assert "verdict: FAIL" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "FAIL"
    failed = {c["name"] for c in results["checks"] if c["decision"] == "FAIL"}
    assert {"forgotten_generation", "resurrection"} <= failed
    assert results["forget_spec"]["label"] == LABEL


def test_report_is_self_contained_and_escaped(noop, tmp_path):
    out, _ = noop
    html = (out / "report.html").read_text()
    assert "<script" not in html.lower()  # the label came out escaped, and the page runs no script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    without_namespaces = re.sub(r'xmlns(:\w+)?="http[^"]*"', "", html)
    assert "http://" not in without_namespaces and "https://" not in without_namespaces
    assert html.count("<svg") >= 2 * 4 + 1  # ROC + histograms per attack, per-class accuracy
    assert html.count('src="data:image/png;base64,') >= 6
    assert "FAIL" in html and "forgotten_generation" in html
    # re-render from results.json alone (no model work): the same page
    again = tmp_path / "again.html"
    result = CliRunner().invoke(main, ["report", str(out / "results.json"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert again.read_text() == html


def test_retrained_model_never_fails_the_audit(workspace):
    out = workspace["root"] / "retrained"
    result = _audit(workspace, workspace["retrained_a"], out)
    results = json.loads((out / "results.json").read_text())
    failed = [c["detail"] for c in results["checks"] if c["decision"] == "FAIL"]
    assert results["verdict"] in ("PASS", "INCONCLUSIVE"), failed
    assert result.exit_code == {"PASS": 0, "INCONCLUSIVE": 4}[results["verdict"]], result.output
    assert results["schema_version"] == 2
    assert results["membership"]["references"] == ["reference_1", "reference_2"]
    assert set(results["membership"]["conditionings"]) == {"label", "inverted"}
    assert set(results["attacks"]) == {"loss", "secmi", "pia", "pian"}
    for per_model in results["attacks"].values():
        assert set(per_model) == {"original", "unlearned", "reference_1", "reference_2"}
    header = (out / "scores" / "loss.csv").read_text().splitlines()[0]
    assert header == "sample_id,split,is_member,model,conditioning,score,calibrated_score"
    assert results["power"]["statement"].startswith(results["verdict"])
