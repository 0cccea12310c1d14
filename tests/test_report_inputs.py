"""``erasediff report`` on hostile or broken results documents: every one is a one-line usage error (exit 2).

A results.json names the images and (by attack name) the score tables the page embeds; none of them may lead
outside the run's ``images/`` and ``scores/`` folders. The document itself is checked before rendering: its
schema version, the sections the page needs, and a verdict that follows from its checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.checks import evaluate_checks, verdict
from audit.config import Thresholds
from erasediff.cli import main
from reports.html import render_report
from reports.results import SCHEMA_VERSION

# role: (label AUC, forgotten-class accuracy)
ROLES = {"original": (0.9, 0.95), "unlearned": (0.5, 0.04), "reference_1": (0.48, 0.03), "reference_2": (0.52, 0.03)}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def _metrics(auc: float) -> dict:
    return {"auc": auc, "auc_ci": [auc - 0.1, auc + 0.1], "tpr_at_1pct_fpr": 0.02, "fpr_at_1pct_fpr": 0.01,
            "tpr_at_0.1pct_fpr": 0.0, "balanced_accuracy": 0.5, "mann_whitney": {"statistic": 3.0, "pvalue": 0.4},
            "cost": {"calls_per_sample": 1}, "roc": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.6, 1.0]}}


def _difference(estimate: float) -> dict:
    """A paired difference (audit.statistics.PairedDifference.to_dict) of AUC against the two references."""
    references = [ROLES["reference_1"][0], ROLES["reference_2"][0]]
    return {"metric": "auc", "estimate": estimate, "low": estimate - 0.04, "high": estimate + 0.04,
            "confidence": 0.9, "standard_error": 0.02, "subject_value": 0.5 + estimate,
            "reference_values": references, "reference_spread": 0.02, "num_members": 4, "num_nonmembers": 4,
            "n_bootstrap": 100, "bootstrap_low": estimate - 0.03, "bootstrap_high": estimate + 0.03,
            "bootstrap_standard_error": 0.015, "seed_variance": 0.0002, "seed_dof": 12.0, "seed_source": "test"}


def _membership() -> dict:
    """The unlearned model within the margin, the original far outside it (the audit has power): PASS."""
    comparison = {"scale": "raw", "auc": {"raw": {"unlearned": _difference(0.0), "original": _difference(0.4)}},
                  "tpr_at_resolvable_fpr": {"fpr": 0.25, "unlearned": _difference(0.0)}, "decision": "PASS",
                  "power": True, "residual_fraction": {"estimate": 0.0, "low": -0.1, "high": 0.1, "confidence": 0.9},
                  "unlearned_forget_z": [0.1, -0.2, 2.5, 0.0]}
    combined = {"attacks": ["loss"], "unlearned": _difference(0.0), "original": _difference(0.4), "decision": "PASS",
                "power": True, "vetoes": [], "residual_guard": True,
                "residual_fraction": {"estimate": 0.0, "low": -0.1, "high": 0.1, "confidence": 0.9}}
    return {"references": ["reference_1", "reference_2"], "conditionings": ["label"], "num_forget": 4,
            "num_heldout": 4, "inversion_image_ids": [], "confidence": 0.9, "margin": 0.1,
            "attacks": {"loss": {"label": comparison}}, "combined": {"label": combined},
            "seed_spread": {"variances": {}, "dof": 0, "source": "none", "scale": 1.0}, "calibration": None,
            "exposed_forget_images": [{"sample_id": 2, "label": 0, "attack": "loss", "conditioning": "label",
                                       "z": 2.5, "p_value": 0.006}]}


def _document() -> dict:
    """A small but complete schema 3 results document, its checks and verdict computed as an audit does."""
    results = {
        "schema_version": SCHEMA_VERSION, "verdict": None, "created": "2025-01-01T00:00:00+00:00",
        "config": {"seed": 0}, "forget_spec": {"classes": [0], "sample_ids": [], "label": "", "fingerprint": "f0"},
        "data": {"name": "digits", "num_forget": 4, "num_retain": 8, "num_heldout": 4, "splits": {"seed": 0}},
        "environment": {"python": "3.11", "packages": {"numpy": "2"}, "device": "cpu", "seed": 0},
        "judge": {"test_accuracy": 0.97}, "models": {role: {"source": role, "fingerprint": "f"} for role in ROLES},
        "unlearning": {"method": "erasediff", "params": {}, "steps": None, "seconds": 1.0,
                       "curves": {"forget_loss": [1.0, 0.5], "$\\frac{1}{$": [0.1, 0.2]}},
        "membership": _membership(),
        "attacks": {"loss": {role: _metrics(auc) for role, (auc, _) in ROLES.items()}},
        "utility": {role: {"per_class_accuracy": {"0": acc, "1": 0.9}, "forgotten_accuracy": acc,
                           "retained_accuracy": 0.9, "retained_fd": 2.0, "samples_per_class": 2000}
                    for role, (_, acc) in ROLES.items()},
        "extraction": {role: {"num_forget_extracted": 0} for role in ROLES},
        "resurrection": {},
        "images": {"unlearned_forgotten": "unlearned_forgotten.png"},
        "timings": {"total_seconds": 1.0},
    }
    checks = evaluate_checks(results, Thresholds())
    results["checks"] = [c.to_json() for c in checks]
    results["verdict"] = verdict(checks)
    results["power"] = {"statement": "PASS: every check within its margin.", "has_power": True,
                        "residual_leakage": {"label": {"mean": None, "loss": None}}, "would_decide": []}
    return results


SCORE_HEADER = "sample_id,split,is_member,model,conditioning,score,calibrated_score\n"


def _write_run(folder: Path, results: dict) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "scores").mkdir(exist_ok=True)
    (folder / "images" / "unlearned_forgotten.png").write_bytes(PNG)
    rows = [f"{i},{split},{int(split == 'forget')},{role},{conditioning},{0.1 * i},"
            for role in ROLES for conditioning in ("label", "inverted") for split in ("forget", "heldout")
            for i in range(3)]
    (folder / "scores" / "loss.csv").write_text(SCORE_HEADER + "\n".join(rows) + "\n")
    path = folder / "results.json"
    path.write_text(json.dumps(results))
    return path


def _report(path: Path):
    return CliRunner().invoke(main, ["report", str(path)])


def _refused(result, *fragments: str) -> None:
    """Exit 2 and one line on stderr, naming each of ``fragments``."""
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_a_complete_document_renders(tmp_path):
    path = _write_run(tmp_path, _document())
    result = _report(path)
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1 and "not recorded" in html
    assert "None" not in html


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "../results.json", "sub/x.png",
                                  "..png", ".hidden.png", "x.png\n", "x.svg", 7, None])
def test_image_names_must_be_plain_png_names(tmp_path, name):
    results = _document()
    results["images"]["unlearned_forgotten"] = name
    _refused(_report(_write_run(tmp_path, results)), "images.unlearned_forgotten", "plain .png file name")


@pytest.mark.parametrize("target", ["/etc/passwd", "../results.json", "missing.png", "folder.png"])
def test_images_must_be_regular_files_inside_the_images_folder(tmp_path, target):
    results = _document()
    results["images"]["unlearned_forgotten"] = "evil.png"
    path = _write_run(tmp_path, results)
    (tmp_path / "images" / "folder.png").mkdir()
    if target != "folder.png":
        os.symlink(target, tmp_path / "images" / "evil.png")
    else:
        results["images"]["unlearned_forgotten"] = "folder.png"
        path.write_text(json.dumps(results))
    _refused(_report(path), "images.unlearned_forgotten", "not a regular file in")


@pytest.mark.parametrize("attack", ["../../etc/passwd", "a/b", "..", "x.y", "$\\frac{"])
def test_attack_names_cannot_leave_the_scores_folder(tmp_path, attack):
    results = _document()
    results["attacks"][attack] = results["attacks"].pop("loss")
    _refused(_report(_write_run(tmp_path, results)), "attack", "an attack name is letters")


def test_score_tables_must_be_regular_files_inside_the_scores_folder(tmp_path):
    path = _write_run(tmp_path, _document())
    (tmp_path / "scores" / "loss.csv").unlink()
    os.symlink("/etc/passwd", tmp_path / "scores" / "loss.csv")
    _refused(_report(path), "loss.csv", "not a regular file in")


@pytest.mark.parametrize("table, problem", [
    ("sample_id,split\n1,forget\n", "no column 'score'"),
    ("model,split,score\nunlearned,forget,1\n", "no column 'conditioning'"),
    ("model,split,conditioning,score\nunlearned,forget,label,x\n", "could not convert"),
    ("model,split,conditioning,score\nunlearned,forget,label,nan\n", "line 2"),
    ("model,split,conditioning,score\n../x,forget,label,1\n", "line 2"),
    ("model,split,conditioning,score\nretrained,forget,label,1\n", "line 2"),
    ("model,split,conditioning,score\nunlearned,forget,,1\n", "line 2"),
    ("model,split,conditioning,score\nunlearned,forget,label,1\n",
     "lacks forget or heldout rows for the model 'unlearned'"),
    ("model,split,conditioning,score\nunlearned,forget,inverted,1\nunlearned,heldout,inverted,1\n",
     "has no rows under the conditioning 'label'"),
])
def test_malformed_score_tables(tmp_path, table, problem):
    path = _write_run(tmp_path, _document())
    (tmp_path / "scores" / "loss.csv").write_text(table)
    _refused(_report(path), "loss.csv", problem)


def _without(results: dict, *keys: str) -> dict:
    section = results
    for key in keys[:-1]:
        section = section[key]
    del section[keys[-1]]
    return results


def _comparison(results: dict) -> dict:
    return results["membership"]["attacks"]["loss"]["label"]


@pytest.mark.parametrize("change, problem", [
    (lambda r: _without(r, "checks"), "lacks the key 'checks'"),
    (lambda r: _without(r, "utility"), "lacks the key 'utility'"),
    (lambda r: _without(r, "membership"), "lacks the key 'membership'"),
    (lambda r: _without(r, "power"), "lacks the key 'power'"),
    (lambda r: _without(r, "utility", "original"), "key 'utility' lacks the model 'original'"),
    (lambda r: _without(r, "attacks", "loss", "unlearned", "roc"), "key 'attacks.loss.unlearned' lacks 'roc'"),
    (lambda r: _without(r, "checks", 0, "decision"), "key 'checks[0]' lacks 'decision'"),
    (lambda r: _without(r, "environment", "packages"), "key 'environment' lacks 'packages'"),
    (lambda r: r.update(attacks={}), "holds no membership attack"),
    (lambda r: r.update(attacks=[1, 2]), "key 'attacks' must be dict"),
    (lambda r: r["utility"].update(judge={}), "has the model 'judge'"),
    (lambda r: r["utility"].update(retrained={}), "has the model 'retrained'"),
    (lambda r: r["utility"].update(reference_0={}), "has the model 'reference_0'"),
    (lambda r: r["utility"]["reference_1"]["per_class_accuracy"].pop("1"), "other classes"),
    (lambda r: r["attacks"]["loss"]["unlearned"]["roc"].update(fpr=["a"]), "list of numbers"),
    (lambda r: r["checks"][0].update(decision="yes"), "checks[0].decision' must be one of PASS, FAIL"),
    (lambda r: r["checks"][0].update(decision=True), "checks[0].decision' must be str"),
    (lambda r: r["checks"][0].update(interval=[0.1, 0.2, 0.3]), "checks[0].interval' must be [low, high]"),
    (lambda r: r["checks"][0].update(interval=[0.1, "x"]), "checks[0].interval' must be a list of numbers"),
    (lambda r: r["checks"][0].update(estimate=True), "checks[0].estimate' must be int or float or null"),
    (lambda r: r["membership"].update(references=["reference_1", "original"]), "must list reference roles"),
    (lambda r: r["membership"]["attacks"].update(pia={}), "names other attacks than the key 'attacks'"),
    (lambda r: _comparison(r).update(decision="MAYBE"), "membership.attacks.loss.label.decision' must be one of"),
    (lambda r: _without(r, "membership", "attacks", "loss", "label", "power"), "label' lacks 'power'"),
    (lambda r: _comparison(r).update(scale="calibrated"), "label.auc' lacks its scale 'calibrated'"),
    (lambda r: _comparison(r).update(scale=None), "membership.attacks.loss.label.note' must be str"),
    (lambda r: _without(r, "membership", "attacks", "loss", "label", "auc", "raw", "original", "low"),
     "label.auc.raw.original' lacks 'low'"),
    (lambda r: _comparison(r)["auc"]["raw"]["unlearned"].update(reference_values=[0.5, None]),
     "reference_values' must be a list of numbers"),
    (lambda r: r["membership"]["attacks"]["loss"].update(inverted=_comparison(r)),
     "has a conditioning not in 'membership.conditionings'"),
    (lambda r: _without(r, "membership", "exposed_forget_images", 0, "z"), "exposed_forget_images[0]' lacks 'z'"),
    (lambda r: r["membership"]["exposed_forget_images"][0].update(sample_id="2"), "sample_id' must be int"),
    (lambda r: r["power"].update(has_power="yes"), "key 'power.has_power' must be bool"),
])
def test_documents_missing_what_the_page_needs(tmp_path, change, problem):
    results = _document()
    change(results)
    _refused(_report(_write_run(tmp_path, results)), "results.json", problem)


def _prompt_grids(results: dict) -> dict:
    """A text model's resurrection section: one relearning curve and two prompt -> samples rows per model."""
    rows = [{"source": "prompt given to the erasure", "prompt": "three <i>", "judge_accuracy": 0.5,
             "same_for_every_model": True, "image": "prompt_0"},
            {"source": "adversarial prompt", "prompt": "g three", "judge_accuracy": 0.25,
             "same_for_every_model": False, "image": "prompt_1"}]
    results["resurrection"] = {role: {"relearning": {"checkpoints": [0], "judge_accuracy": [0.0]},
                                      "prompt_grid": [dict(row) for row in rows]} for role in ROLES}
    return results["resurrection"]


def test_a_text_models_prompt_grid_renders_and_must_match_between_models(tmp_path):
    results = _document()
    _prompt_grids(results)
    assert _report(_write_run(tmp_path / "ok", results)).exit_code == 0
    html = (tmp_path / "ok" / "report.html").read_text()
    assert 'id="prompts"' in html and "three &lt;i&gt;" in html and "judged 25.0%" in html
    _prompt_grids(results)["reference_2"]["prompt_grid"].pop()
    _refused(_report(_write_run(tmp_path / "short", results)), "prompt_grid' must hold the same rows")
    _prompt_grids(results)["unlearned"]["prompt_grid"][1]["judge_accuracy"] = "high"
    _refused(_report(_write_run(tmp_path / "text", results)), "unlearned.prompt_grid[1].judge_accuracy' must be")


def test_older_schemas_are_refused_with_a_pointer_to_the_audit(tmp_path):
    results = _document()
    results["schema_version"] = 1
    _refused(_report(_write_run(tmp_path / "1", results)), "is a schema 1 results document (erasediff before the "
             "three-valued verdict); this erasediff reads schema 3 only: re-run the audit")
    results["schema_version"] = 2
    _refused(_report(_write_run(tmp_path / "2", results)), "is a schema 2 results document",
             "reads schema 3 only: re-run the audit")


@pytest.mark.parametrize("version", [4, 0, "3", True, 3.0, 1.0])
def test_other_schema_versions_are_refused(tmp_path, version):
    results = _document()
    results["schema_version"] = version
    _refused(_report(_write_run(tmp_path, results)), f"has schema_version {version!r}",
             f"reads schema {SCHEMA_VERSION} only")


def test_a_number_too_long_to_parse(tmp_path):
    path = _write_run(tmp_path, _document())
    path.write_text(path.read_text().replace(f'"schema_version": {SCHEMA_VERSION}', '"schema_version": ' + "9" * 5000))
    _refused(_report(path), "is not JSON")


def test_a_verdict_must_follow_from_the_checks(tmp_path):
    results = _document()
    assert results["verdict"] == "PASS" and _report(_write_run(tmp_path, results)).exit_code == 0
    results["checks"][0]["decision"] = "FAIL"
    _refused(_report(_write_run(tmp_path, results)), "says verdict 'PASS' but its checks give FAIL",
             f"failed: {results['checks'][0]['name']}; inconclusive: none")
    results = _document()
    results["checks"][1]["decision"] = "INCONCLUSIVE"
    _refused(_report(_write_run(tmp_path, results)), "says verdict 'PASS' but its checks give INCONCLUSIVE",
             f"failed: none; inconclusive: {results['checks'][1]['name']}")
    results = _document()
    results["verdict"] = "FAIL"
    _refused(_report(_write_run(tmp_path, results)), "says verdict 'FAIL' but its checks give PASS")
    results["checks"], results["verdict"] = [], "PASS"
    _refused(_report(_write_run(tmp_path, results)), "its checks give INCONCLUSIVE (0 checks")


def test_long_names_keep_messages_short(tmp_path):
    results = _document()
    results["membership"]["conditionings"].append("x" * 5000)
    results["membership"]["attacks"]["loss"]["x" * 5000] = []
    result = _report(_write_run(tmp_path, results))
    _refused(result, "key 'membership.attacks.loss.xxx")
    assert len(result.output) < 400 + len(str(tmp_path))


def test_render_report_names_its_source(tmp_path):
    with pytest.raises(ValueError, match=r"'somewhere\.json' is not an erasediff results document"):
        render_report([1], tmp_path, "somewhere.json")


def test_reports_need_no_torch():
    code = "import sys, reports, erasediff.cli.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
