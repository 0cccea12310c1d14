"""The auditor's stress probes (#31): side effects per class, the retained members' exposure, membership after
fine-tuning, and erasures in sequence, on tiny real models (tests/conftest.py's control workspace)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from audit.config import Thresholds
from audit.probes.exposure import ExposureProbe
from audit.probes.finetuned_membership import FinetunedMembershipProbe
from audit.probes.side_effects import _per_class_check
from audit.run import run_audit
from audit.seed_spread import EXPOSURE, SeedPriors, finetuned, mean_statistic
from audit.statistics import holm_rejections, paired_proportion_difference
from diffusion.model import DiffusionModel
from diffusion.reference import recipe_key
from erasediff.cli import main
from tests.conftest import CONTROL_MEMBER_FRACTION, control_audit, control_config


def test_paired_proportions_keep_a_width_and_see_a_drop():
    same = [1] * 50
    diff = paired_proportion_difference(same, same, 0.90, 0.1)
    assert diff.estimate == 0 and diff.low < 0 < diff.high < 0.1  # no discordant pair: still a width, within 0.1
    dropped = paired_proportion_difference([1] * 50, [1] * 25 + [0] * 25, 0.90, 0.1)
    assert dropped.estimate == 0.5 and dropped.low > 0.1 and dropped.p_value < 1e-6
    assert paired_proportion_difference([1] * 25 + [0] * 25, [1] * 50, 0.90, 0.1).high < 0  # a gain is no drop


def test_holm_steps_down_and_stops_at_the_first_kept_hypothesis():
    assert holm_rejections([0.001, 0.06, 0.012], 0.05) == [True, False, True]  # 0.001<0.05/3, 0.012<0.025, 0.06>0.05
    assert holm_rejections([0.02, 0.03], 0.05) == [True, True]
    assert holm_rejections([0.2, 0.001], 0.01) == [False, True]


def _utility(drop_class: int | None, drop: int) -> dict:
    correct = {c: [1] * 50 for c in range(1, 10)}
    unlearned = {c: list(v) for c, v in correct.items()}
    if drop_class is not None:
        unlearned[drop_class] = [0] * drop + [1] * (50 - drop)
    return {"original": {"retained_correct": correct}, "unlearned": {"retained_correct": unlearned}}


def test_one_damaged_neighbour_fails_the_per_class_check_while_the_mean_hides_it():
    thresholds = Thresholds()
    assert _per_class_check(_utility(None, 0), thresholds).decision == "PASS"
    damaged = _per_class_check(_utility(5, 20), thresholds)  # class 5 loses 40 points: 4.4 points on the mean
    assert damaged.decision == "FAIL" and "class 5" in damaged.detail and damaged.estimate == pytest.approx(0.4)
    assert _per_class_check(_utility(5, 4), thresholds).decision == "INCONCLUSIVE"  # 8 points: undecided at n = 50


def _exposure_results(unlearned_shift: float, measured: bool = True, num: int = 100) -> dict:
    """Scores of retained members (shifted up by each model's shift) and heldout images shared by every model (each
    image's own difficulty), with a little model-to-model noise; two attacks, two references; ``measured``: a
    shipped seed spread for the exposure (variance 0.01 on 5 degrees of freedom), else the references' alone."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(size=2 * num)
    is_member = np.r_[np.ones(num, bool), np.zeros(num, bool)]
    shifts = {"unlearned": unlearned_shift, "original": 2.0, "reference_a": 2.0, "reference_b": 2.1}
    sections = {role: {"is_member": is_member.tolist(), "seed": 0, "sample_ids": list(range(2 * num)),
                       "scores": {attack: (difficulty + shift * is_member + 0.3 * rng.normal(size=2 * num)).tolist()
                                  for attack in ("loss", "sima")}}
                for role, shift in shifts.items()}
    priors = SeedPriors({EXPOSURE: {mean_statistic(["loss", "sima"]): 0.01}}, dofs={EXPOSURE: 5}) if measured else None
    return {"exposure": sections, "membership": {"references": ["reference_a", "reference_b"],
                                                 **({"seed_spread": priors.describe()} if priors else {})}}


def test_retained_exposure_fails_a_model_that_over_exposes_the_members_near_the_top_of_the_auc():
    """The references rank retained members above heldout images with AUC ~0.92: an AUC margin of 0.1 has no room
    above them, the odds do. A model at AUC ~0.99 (the attack's mistakes cut ~eight-fold) FAILs; one like the
    references PASSes."""
    probe, thresholds = ExposureProbe(), Thresholds()
    over, = probe.checks(_exposure_results(3.4), thresholds)
    assert over.decision == "FAIL" and over.interval[0] > np.log(thresholds.exposure_odds_ratio), over.detail
    assert "unlearned 0.99" in over.detail and "cannot FAIL" not in over.detail
    like, = probe.checks(_exposure_results(2.05), thresholds)
    assert like.decision == "PASS" and abs(like.estimate) < 0.3, like.detail
    assert probe.checks(_exposure_results(2.05, measured=False), thresholds)[0].decision == "INCONCLUSIVE"
    assert probe.checks(_exposure_results(2.05), Thresholds(exposure_odds_ratio=1.01))[0].decision != "PASS"


def _finetuned_results(unlearned_shift: float, variance: float | None, num: int = 45) -> dict:
    """Fine-tuned models' scores on forget and heldout images (the forget images shifted up by each model's shift,
    each image's own difficulty shared), two attacks, two references; ``variance``: a shipped seed spread of the
    route's AUCs on 9 degrees of freedom (None: the references' own, 1 degree of freedom)."""
    rng = np.random.default_rng(1)
    difficulty = rng.normal(size=2 * num)
    is_member = np.r_[np.ones(num, bool), np.zeros(num, bool)]
    shifts = {"unlearned": unlearned_shift, "original": 2.0, "reference_a": 0.0, "reference_b": 0.3}
    sections = {role: {"is_member": is_member.tolist(), "seed": 0, "steps": 100, "erased_class": {
        "fit_ids": list(range(10)), "scores": {attack: (difficulty + shift * is_member
                                                        + 0.3 * rng.normal(size=2 * num)).tolist()
                                               for attack in ("loss", "sima")}}}
                for role, shift in shifts.items()}
    route = finetuned("erased_class")
    statistics = ("loss", "sima", mean_statistic(["loss", "sima"]))
    spread = (SeedPriors({route: dict.fromkeys(statistics, variance)}, dofs={route: 9}, sources={route: "test"})
              if variance is not None else SeedPriors())
    return {"finetuned_membership": sections,
            "membership": {"references": ["reference_a", "reference_b"], "seed_spread": spread.describe()}}


def test_membership_after_finetune_certifies_with_a_measured_spread_and_only_then():
    """With the references' spread alone (1 degree of freedom at K = 2) the interval is too wide to certify a
    retrain-like model; with a measured spread of the fine-tuned AUCs (conditioning finetuned:<route>) it PASSes,
    and a model whose forget images stand out FAILs either way."""
    probe, thresholds = FinetunedMembershipProbe(), Thresholds().for_task(True)
    alone, = probe.checks(_finetuned_results(0.15, None), thresholds)
    measured, = probe.checks(_finetuned_results(0.15, 0.0004), thresholds)
    assert alone.decision == "INCONCLUSIVE" and measured.decision == "PASS", (alone.detail, measured.detail)
    assert "seed spread from test" in measured.detail and measured.interval[1] - measured.interval[0] < (
        alone.interval[1] - alone.interval[0])
    assert probe.checks(_finetuned_results(2.0, 0.0004), thresholds)[0].decision == "FAIL"


def test_the_no_op_and_the_retrain_on_the_stress_checks(control_workspace, tmp_path):
    """Known answers at test scale, every stress probe on: every stress check is made on both; the no-op FAILs
    membership after fine-tuning on retained data (its leak is still there), the retrain FAILs none. The two audits
    share the fixed models' results (a memo, as benchmarks/controls.py does)."""
    decisions, memo = {}, {}
    for name, unlearned in (("noop", "original"), ("retrained", "retrained_a")):
        out = tmp_path / name
        run_audit(control_config(control_workspace, control_workspace[unlearned], out, "stress_config"), memo=memo)
        results = json.loads((out / "results.json").read_text())
        # the original's recipe is recorded: a seed spread measured on it applies on any CPU (audit/seed_spread.py)
        assert results["models"]["original"]["recipe"] == recipe_key(
            DiffusionModel.read_metadata(control_workspace["original"]))
        decisions[name] = {c["name"]: c["decision"] for c in results["checks"]}
        assert {"retained_exposure", "retained_per_class", "membership_after_finetune[erased_class]",
                "membership_after_finetune[retained]"} <= set(decisions[name])
        exposure = results["exposure"]["unlearned"]
        assert len(exposure["is_member"]) == len(exposure["scores"]["sima"]) >= 20
        assert not set(exposure["sample_ids"]) & set(results["membership"]["calibration"]["member_ids"])
        assert set(results["finetuned_membership"]["unlearned"]["erased_class"]["fit_ids"]) == set(
            results["membership"]["inversion_image_ids"])
    assert decisions["noop"]["membership_after_finetune[retained]"] == "FAIL"
    assert "FAIL" not in {d for name, d in decisions["retrained"].items()}


def _unlearn(workspace, model, out, *classes):
    args = ["unlearn", "--model", model, "--method", "erasediff", "--steps", "20", "--data", workspace["root"] /
            "digits3", "--member-fraction", CONTROL_MEMBER_FRACTION, "--out", out, "--quiet"]
    for c in classes:
        args += ["--forget-class", c]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_erasures_in_sequence_keep_their_history_and_are_audited_together(control_workspace, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert _unlearn(control_workspace, control_workspace["original"], first, 1).exit_code == 0
    result = _unlearn(control_workspace, first, second, 2)
    assert result.exit_code == 0, result.output
    record = DiffusionModel.read_metadata(second)
    history = record["history"]
    assert [h["forget_spec"]["classes"] for h in history] == [[1]]
    assert history[0]["parent_fingerprint"] == DiffusionModel.load(control_workspace["original"]).fingerprint()
    assert record["num_retain"] < DiffusionModel.read_metadata(first)["num_retain"]  # class 1 is not trained again
    # the audit checks both classes: references retrained without class 1 only are refused (another forget set)
    refused = control_audit(control_workspace, second, tmp_path / "audit")
    assert refused.exit_code == 2 and "forget" in refused.output.lower(), refused.output
    assert not (tmp_path / "audit").exists()
    # audited against another model than the one the first erasure started from: refused in one line
    other = control_audit(control_workspace, second, tmp_path / "other", "--model", control_workspace["retrained_a"])
    assert other.exit_code == 2 and "started from" in other.output and len(other.output.strip().splitlines()) == 1
