"""The shipped seed spread: applied only to the model and kind of task it was measured on, pooled and checked."""

from __future__ import annotations

import pytest

from audit.seed_spread import NO_PRIORS, SeedPriors, load_measurements, mean_statistic, priors_for, task_kind

MEASURED = {"provenance": {"date": "2026-12-04", "exposure": "5 retrains without class 0"}, "tasks": [
    {"kind": "class", "original_fingerprint": "abc", "original_recipe": "r1", "num_forget": 45, "num_retrains": 12,
     "dof": 9, "description": "test", "dofs": {"exposure": 4}, "images": {"exposure": 200},
     "variances": {"label": {"loss": 0.002, mean_statistic(["loss", "pia"]): 0.001}, "exposure": {"loss": 0.01}}},
    {"kind": "samples", "original_fingerprint": "abc", "num_forget": 50, "num_retrains": 5, "dof": 4,
     "description": "test", "variances": {"label": {"loss": 0.0004}}},
]}


def test_a_measurement_applies_to_its_model_and_kind_of_task_only():
    prior = priors_for("abc", "class", 45, MEASURED).spread("label", "loss")
    assert prior.variance == 0.002 and prior.dof == 9 and "12 retrains measured on this model" in prior.source
    assert priors_for("other", "class", 45, MEASURED) is NO_PRIORS
    assert priors_for("abc", None, 45, MEASURED) is NO_PRIORS
    assert priors_for("abc", "class", 45, MEASURED).spread("inverted", "loss") is None
    # an AUC's variance over image pairs shrinks with the images: 100 deleted images, half the variance of 50
    assert priors_for("abc", "samples", 100, MEASURED).spread("label", "loss").variance == pytest.approx(0.0002)


def test_a_measurement_applies_to_a_model_trained_by_its_recipe_on_another_cpu():
    """Same data, split and settings, other bits (another CPU): the measurement applies, and says so; a conditioning
    measured on other retrains keeps its own degrees of freedom and cites its own provenance."""
    priors = priors_for("other bits", "class", 45, MEASURED, recipe="r1")
    assert priors.spread("label", "loss").dof == 9 and "trained by this recipe" in priors.spread("label", "loss").source
    exposure = priors.spread("exposure", "loss")
    assert exposure.dof == 4 and "5 retrains without class 0" in exposure.source
    assert "12 retrains" not in exposure.source
    assert priors_for("other bits", "class", 45, MEASURED, recipe="r2") is NO_PRIORS
    assert priors_for("other bits", "samples", 45, MEASURED, recipe="r1") is NO_PRIORS  # no recipe recorded there


def test_an_exposure_spread_measured_on_more_images_than_scored_is_scaled_up_never_down():
    """The exposure spread is mostly image luck: an audit scoring half the images gets twice the variance; one
    scoring more keeps the measured variance (conservative), and every other conditioning is left alone."""
    def variance(images: int, conditioning: str = "exposure") -> float:
        return priors_for("abc", "class", 45, MEASURED, exposure_images=images).spread(conditioning, "loss").variance
    assert variance(100) == pytest.approx(0.02) and variance(50) == pytest.approx(0.04)
    assert variance(200) == variance(400) == pytest.approx(0.01)
    assert variance(100, "label") == pytest.approx(0.002)
    priors = priors_for("abc", "class", 45, MEASURED, exposure_images=100)
    assert SeedPriors.from_dict(priors.describe()) == priors


def test_a_concept_measurement_applies_to_that_concept_only():
    """A text model's spread is measured per concept: erasing "three" says nothing of how retrains without "five"
    scatter, so an audit of another concept of the same model gets the references' spread alone."""
    measured = {"provenance": {}, "tasks": [
        {"kind": "concept:3", "original_fingerprint": "txt", "num_forget": 90, "num_retrains": 6, "dof": 5,
         "description": "test", "variances": {"generation": {"combined_prompts": 0.04}}}]}
    three = task_kind((3,), tuple(range(90)), True)
    assert priors_for("txt", three, 90, measured).spread("generation", "combined_prompts").dof == 5
    assert priors_for("txt", task_kind((5,), (), True), 90, measured) is NO_PRIORS


def test_task_kinds_and_the_mean_statistic():
    assert task_kind((0,), (), False) == "class" and task_kind((), (1, 2), False) == "samples"
    assert task_kind((0, 1), (), False) is None and task_kind((3, 5), (), True) is None
    assert task_kind((3,), (1, 2), True) == "concept:3"  # a concept's images are its class's members
    assert mean_statistic(["pia", "loss"]) == mean_statistic(["loss", "pia"]) == "mean:loss,pia"


def test_priors_round_trip_through_a_results_document():
    priors = priors_for("abc", "class", 45, MEASURED)
    assert SeedPriors.from_dict(priors.describe()) == priors and SeedPriors.from_dict({}) == NO_PRIORS


def test_the_shipped_measurement_is_well_formed():
    shipped = load_measurements()
    for task in shipped["tasks"]:
        assert task["kind"] in ("class", "samples", "concept:3") and task["dof"] >= 4 and task["num_retrains"] >= 5
        assert len(task["original_recipe"]) == 16  # diffusion.reference.recipe_key: the built-in model's cache key
        for conditioning, per in task["variances"].items():
            # log odds; a rate's variance is at most 1/4; an AUC's between retrains far less
            limit = {"exposure": 1.0, "generation": 0.25}.get(conditioning, 0.05)
            assert all(0 <= v < limit for v in per.values())
        assert all(dof >= 4 for dof in task.get("dofs", {}).values())
