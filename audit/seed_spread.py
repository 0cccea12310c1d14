"""Measured retrain-to-retrain spread of the membership AUCs, shipped for the built-in tasks.

Two models retrained without the same forget set, with different seeds, score the same fixed images differently:
on the default task their forget-vs-heldout AUCs spread 1.6-4x more than resampling the images predicts
(benchmarks/results/seed_spread.txt). An audit's K references estimate that spread with only K - 1 degrees of
freedom (one, at the default K = 2), so for the built-in reference model the spread is measured once over many
retrains (``benchmarks/seed_spread.py`` writes ``seed_spread.json`` beside this file, with its provenance) and
pooled, in every audit, with the references' own spread; an audit whose references spread more than the
measurement allows drops it (:func:`audit.statistics.pooled_seed_spread`).

A measurement applies to the model it was made on (the original's fingerprint) and to the kind of task: erasing
one class, or deleting member images (its variance scaled by measured size / audited size, as an AUC's variance
over image pairs shrinks). The retained members' exposure records how many images it was measured on; an audit
scoring fewer scales its variance up by measured / audited (image luck is most of it: 100 + 100 images spread 1.9x
more than 200 + 200, benchmarks/results/stress.txt), one scoring more keeps it (never extrapolated down). Any other
audit gets :data:`NO_PRIORS`: the references' spread alone.

Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from .statistics import SeedSpread

SEED_SPREAD_FILE = "seed_spread.json"
GENERATION, RELEARNING = "generation", "relearning"  # the generation checks' statistics, recorded beside membership
EXPOSURE = "exposure"  # the retained members' exposure (audit/probes/exposure.py), its mean over attacks


def finetuned(route: str) -> str:
    """The conditioning of the forget set's membership after every model is fine-tuned on ``route``
    (audit/probes/finetuned_membership.py), its spread measured on retrains of its own."""
    return f"finetuned:{route}"


def mean_statistic(attacks: list[str]) -> str:
    """The name under which the spread of the mean over ``attacks`` is recorded (it depends on the attack set)."""
    return "mean:" + ",".join(sorted(attacks))


def task_kind(classes: tuple[int, ...], sample_ids: tuple[int, ...], concept: bool) -> str | None:
    """``"class"`` (one class erased), ``"samples"`` (member images deleted), ``"concept:<class>"`` (a text model's
    concept, measured per concept: one concept's retrains say nothing of another's) or None (a kind never
    measured)."""
    if concept:
        return f"concept:{classes[0]}" if len(classes) == 1 else None
    if len(classes) == 1 and not sample_ids:
        return "class"
    if sample_ids and not classes:
        return "samples"
    return None


@dataclass(frozen=True)
class SeedPriors:
    """The measured between-retrain variances for one audit's task: conditioning -> statistic -> variance.

    ``statistic`` is an attack's name or :func:`mean_statistic` (conditioning ``generation``: a generation
    check's name, e.g. ``relearning``, the relearning curve's area, or ``forgotten_generation``, a rate); ``dof``
    the degrees of freedom of every variance (retrains minus one, summed over the measured tasks), ``source`` the
    provenance in words; ``dofs``, ``sources`` and ``scales`` override ``dof``, ``source`` and ``scale`` for a
    conditioning measured on other retrains (``exposure``: the retained members' exposure, and :func:`finetuned`:
    membership after fine-tuning, each measured after the rest).
    """

    variances: dict[str, dict[str, float]] = field(default_factory=dict)
    dof: int = 0
    source: str = "no measured seed spread for this task"
    scale: float = 1.0
    dofs: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)

    def spread(self, conditioning: str, statistic: str) -> SeedSpread | None:
        variance = self.variances.get(conditioning, {}).get(statistic)
        dof = self.dofs.get(conditioning, self.dof)
        if variance is None or dof <= 0:
            return None
        scale = self.scales.get(conditioning, self.scale)
        return SeedSpread(variance * scale, dof, self.sources.get(conditioning, self.source))

    def describe(self) -> dict:
        """JSON-ready; :meth:`from_dict` reads it back (a results document carries the spread its checks used)."""
        return {"variances": self.variances, "dof": self.dof, "source": self.source, "scale": self.scale,
                "dofs": self.dofs, "sources": self.sources, "scales": self.scales}

    @classmethod
    def from_dict(cls, data: dict) -> SeedPriors:
        return cls(**data) if data else cls()


NO_PRIORS = SeedPriors()


def load_measurements() -> dict:
    """The shipped measurements ({"tasks": [...], "provenance": {...}}); empty when none is shipped."""
    try:
        text = resources.files("audit").joinpath(SEED_SPREAD_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"tasks": []}
    return json.loads(text)


def priors_for(original_fingerprint: str, kind: str | None, num_forget: int,
               measurements: dict | None = None, recipe: str | None = None,
               exposure_images: int = 0) -> SeedPriors:
    """The measured spread that applies to an audit of the model ``original_fingerprint`` on a task of ``kind``
    with ``num_forget`` forget images (and ``exposure_images`` retained members scored for exposure), or
    :data:`NO_PRIORS`.

    A measurement applies to the model it was made on, or to one trained by the same ``recipe`` (the built-in
    reference's data, split and training settings, :func:`diffusion.reference.recipe_key`):
    trained on another CPU, the same recipe gives other bits, not another spread between retrains (which every
    audit still checks against its own references)."""
    measurements = load_measurements() if measurements is None else measurements
    for task in measurements.get("tasks", []):
        same_model = task["original_fingerprint"] == original_fingerprint
        same_recipe = recipe is not None and task.get("original_recipe") == recipe
        if (same_model or same_recipe) and task["kind"] == kind:
            scale = task["num_forget"] / num_forget if kind == "samples" else 1.0
            provenance = measurements.get("provenance", {})
            made_on = "this model" if same_model else "a model trained by this recipe (other bits: another CPU)"
            source = (f"the spread of {task['num_retrains']} retrains measured on {made_on} "
                      f"({task['description']}; {provenance.get('date', 'undated')}, {SEED_SPREAD_FILE})")
            sources = {conditioning: f"{provenance.get(conditioning, 'undated')}, measured on {made_on} "
                                     f"({SEED_SPREAD_FILE})"
                       for conditioning in task.get("dofs", {})}
            measured_images = task.get("images", {}).get(EXPOSURE)
            scales = ({EXPOSURE: max(1.0, measured_images / exposure_images)}
                      if measured_images and exposure_images else {})
            return SeedPriors(task["variances"], int(task["dof"]), source, scale, task.get("dofs", {}), sources,
                              scales)
    return NO_PRIORS
