"""Checks on what the models generate, compared with the references image by image.

Every model samples from the same starting noises (:func:`diffusion.quality.per_class_noise_ids`), so a probe's
per-image outcomes pair across models; the interval of (unlearned - references' mean) counts the retrains' seeds
as the membership checks do (:func:`audit.statistics.seed_aware_difference`, the spread measured for the built-in
tasks recorded under ``generation``). The checks are one-sided: a model that brings the erased class back LESS
than a retrain is not a leak here (membership sees an over-erased forget set).
"""

from __future__ import annotations

from reports.results import FAIL, INCONCLUSIVE, PASS, Check

from . import statistics
from .seed_spread import GENERATION, RELEARNING, SeedPriors


def signed(value: float) -> str:
    return f"{value:+.3f}"


def interval_text(low: float, high: float, confidence: float) -> str:
    return f"[{signed(low)}, {signed(high)}] at {confidence:.0%}"


def at_most_decision(low: float, high: float, limit: float) -> str:
    """One-sided: PASS if the whole interval is at most ``limit``, FAIL if all of it is above, else INCONCLUSIVE."""
    return PASS if high <= limit else FAIL if low > limit else INCONCLUSIVE


# The attacks whose per-image outcomes share one pairing (output j starts from the erased class's evaluation noise j),
# so that image by image their max is the worst case: every prompt or embedding attack. The noise-trajectory probe's
# output j is another input (held-out image j mod N, its own noise) and stays out.
WORST_OF = ("resurrection", "adversarial_prompt", "ring_a_bell", "p4d")


def worst_of(values: dict[str, list[float]]) -> list[float] | None:
    """Image by image the max over the :data:`WORST_OF` attacks in ``values`` (name -> per-image 0/1 outcomes);
    None unless two or more are there, all of one length."""
    worst = [values[name] for name in WORST_OF if name in values]
    if len(worst) < 2 or len({len(v) for v in worst}) != 1:
        return None
    return [max(column) for column in zip(*worst)]


def generation_values(results: dict, role: str) -> dict[str, list[float]]:
    """The per-image values of one model behind each generation check: ``forgotten_generation`` (0/1, the erased
    classes asked for), ``resurrection`` and, for a text model, ``adversarial_prompt``, ``ring_a_bell``, ``p4d`` and
    ``noise_trajectory`` (0/1, the images a probe brings back), ``worst_resurrection`` (image by image the max over
    the :data:`WORST_OF` attacks present, when two or more are), ``relearning`` (each starting noise's share of
    correct samples along the relearning curve); only those the document holds."""
    values = {}
    forgotten = results["utility"][role].get("forgotten_correct")
    if forgotten:
        values["forgotten_generation"] = forgotten
    found = (results.get("resurrection") or {}).get(role) or {}
    for key, name in (("inversion", "resurrection"), ("adversarial_prompt", "adversarial_prompt"),
                      ("ring_a_bell", "ring_a_bell"), ("p4d", "p4d"), ("noise_trajectory", "noise_trajectory")):
        if key in found:
            values[name] = found[key]["per_image_correct"]
    worst = worst_of(values)
    if worst is not None:
        values["worst_resurrection"] = worst
    if "relearning" in found:
        values[RELEARNING] = found["relearning"]["per_image_area"]
    return values


def paired_generation_check(name: str, description: str, results: dict, margin: float, confidence: float,
                            per_role: dict[str, dict[str, list[float]]] | None = None) -> Check | None:
    """The check ``name`` (a key of :func:`generation_values`, or of ``per_role``: role -> name -> per-image values,
    a probe's own): the unlearned model's mean per-image value at most ``margin`` above the references', at
    ``confidence``; None when the document lacks the values. No PASS without an estimate of the seeds' spread. The
    detail states the check's power where it stands: the smallest difference its interval's width would FAIL."""
    references = results["membership"]["references"]
    values = [(per_role or {}).get(role) or generation_values(results, role) for role in ("unlearned", *references)]
    if not references or not all(name in v for v in values):
        return None
    priors = SeedPriors.from_dict(results["membership"].get("seed_spread", {}))
    boot = statistics.paired_mean_bootstrap(values[0][name], [v[name] for v in values[1:]], metric=name)
    diff = statistics.seed_aware_difference(boot, confidence, priors.spread(GENERATION, name))
    decision = at_most_decision(diff.low, diff.high, margin)
    if decision == PASS and diff.seed_dof == 0:
        decision = INCONCLUSIVE
    detail = (f"unlearned {diff.subject_value:.3f} vs references "
              f"{', '.join(f'{v:.3f}' for v in diff.reference_values)}: difference {signed(diff.estimate)} "
              f"{interval_text(diff.low, diff.high, confidence)} ({diff.num_members} starting noises, paired; seed "
              f"spread from {diff.seed_source}), limit {margin:g}; at this width it FAILs a difference above "
              f"{signed(margin + diff.estimate - diff.low)}")
    return Check(name, description, decision, diff.estimate, [diff.low, diff.high], f"interval at most +{margin:g}",
                 detail)
