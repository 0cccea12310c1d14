"""The canary audit: deleted canaries against never-included ones, an exact test that needs no retrained model.

Canaries were included in training at random (:mod:`diffusion.canaries`) and the included ones deleted with the
user's forget set. Every membership attack scores every canary on the unlearned model and on the original. The
canaries are split at random into a calibration half, on which the attack with the highest AUC (deleted vs
never included) is chosen, and a test half, on which the chosen attack is tested
(:mod:`audit.canary_statistics`): so the choice costs no validity.

The verdict (three-valued, like the audit's): FAIL when the randomisation test finds the deleted canaries on the
unlearned model (p < alpha: something of them remains, an exact statement at any sample size); PASS when it does
not, the test finds them on the original (the audit's power), and the attacker's AUC on the unlearned model is at
most 0.5 + margin at the stated confidence; INCONCLUSIVE otherwise. An exact retrain FAILs with probability alpha,
by construction.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attacks import ATTACKS
from attacks.metrics import auc
from diffusion.canaries import Canaries, check_model_commitment, read_canaries, read_sealed
from diffusion.data import ImageDataset
from diffusion.environment import environment_info
from diffusion.io import atomic_output_dir, write_json
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.provenance import load_data_for_model
from diffusion.seeding import derive_seed
from reports.results import FAIL, INCONCLUSIVE, PASS

from .canary_statistics import auc_upper_bound, epsilon_lower_bound, permutation_test

ROLES = ("unlearned", "original")


@dataclass
class CanaryAuditConfig:
    """Everything a canary audit depends on.

    Attributes:
        canaries: the folder of ``erasediff canaries make`` (with its sealed assignment).
        model: the original model, trained with those canaries; unlearned: the model after the deletion.
        attacks: membership attacks (their paper defaults: the canaries are the only data the audit holds).
        alpha: level of the randomisation test; confidence: of the AUC bound; auc_margin: a PASS needs the
            attacker's AUC at most 0.5 + auc_margin.
        n_permutations: random re-assignments of the randomisation test.
    """

    canaries: str
    model: str
    unlearned: str
    attacks: list[str] = field(default_factory=lambda: ["loss", "secmi", "pia", "pian", "sima"])
    alpha: float = 0.05
    confidence: float = 0.90
    auc_margin: float = 0.1
    n_permutations: int = 10_000
    seed: int = 0
    out: str = "erasediff-out/canary-audit"
    force: bool = False
    quiet: bool = False


def calibration_half(num: int, is_deleted: np.ndarray, seed: int) -> np.ndarray:
    """True for the calibration half: a random half of the deleted and of the never-included canaries."""
    rng = np.random.default_rng(derive_seed(seed, "canary-halves") % 2**32)
    calibration = np.zeros(num, dtype=bool)
    for group in (np.flatnonzero(is_deleted), np.flatnonzero(~is_deleted)):
        calibration[rng.permutation(group)[: group.size // 2]] = True
    return calibration


def canary_test(scores: dict[str, np.ndarray], is_deleted: np.ndarray, calibration: np.ndarray,
                config: CanaryAuditConfig) -> dict:
    """One model's canary section: every attack's AUC on both halves, the attack chosen on the calibration half,
    and on the test half its randomisation p-value, AUC bound and one-run epsilon bound."""
    test = ~calibration
    per_attack = {name: {"calibration_auc": auc(s[calibration & is_deleted], s[calibration & ~is_deleted]),
                         "test_auc": auc(s[test & is_deleted], s[test & ~is_deleted])}
                  for name, s in scores.items()}
    chosen = max(per_attack, key=lambda name: per_attack[name]["calibration_auc"])
    s, deleted = scores[chosen][test], is_deleted[test]
    observed, p_value = permutation_test(s, deleted, n_permutations=config.n_permutations, seed=config.seed)
    bound = auc_upper_bound(observed, int(deleted.sum()), int((~deleted).sum()), config.confidence)
    epsilon = epsilon_lower_bound(s, deleted, confidence=1.0 - config.alpha)
    return {"attacks": per_attack, "chosen_attack": chosen, "test_auc": observed, "p_value": p_value,
            "auc_upper_bound": bound, "epsilon": epsilon.to_dict(), "num_deleted": int(deleted.sum()),
            "num_never_included": int((~deleted).sum())}


def canary_verdict(sections: dict[str, dict], config: CanaryAuditConfig) -> tuple[str, str]:
    """(verdict, why in words) from the unlearned model's and the original's sections."""
    unlearned, original = sections["unlearned"], sections["original"]
    limit = 0.5 + config.auc_margin
    found = (f"{unlearned['chosen_attack']} AUC {unlearned['test_auc']:.3f} on {unlearned['num_deleted']} deleted vs "
             f"{unlearned['num_never_included']} never-included canaries, randomisation p = {unlearned['p_value']:.3g}")
    if unlearned["p_value"] < config.alpha:
        return FAIL, (f"the deleted canaries are still found on the unlearned model ({found} < {config.alpha:g}): "
                      "something of them remains")
    if original["p_value"] >= config.alpha:
        return INCONCLUSIVE, (f"the attacks do not find the included canaries on the original either (p = "
                              f"{original['p_value']:.3g}): the test has no power, so its silence certifies nothing")
    if unlearned["auc_upper_bound"] <= limit:
        return PASS, (f"not found on the unlearned model ({found}), found on the original (p = "
                      f"{original['p_value']:.3g}); an attacker ranks deleted canaries above unseen ones with AUC at "
                      f"most {unlearned['auc_upper_bound']:.3f} <= {limit:g} at {config.confidence:.0%}")
    return INCONCLUSIVE, (f"not found ({found}), but the AUC bound {unlearned['auc_upper_bound']:.3f} exceeds "
                          f"{limit:g}: more canaries would decide")


def score_canaries(model: DiffusionModel, dataset: ImageDataset, canaries: Canaries, config: CanaryAuditConfig
                   ) -> dict[str, np.ndarray]:
    """Every attack of ``config`` (its paper defaults) on every canary as ``model`` takes them: attack -> (N,)
    scores."""
    images = model.data_view(dataset, config.seed)(dataset.select(canaries.ids))
    return {name: ATTACKS.make(name).score(model, images, seed=config.seed, quiet=config.quiet).scores
            for name in config.attacks}


def canary_section(model: DiffusionModel, dataset: ImageDataset, config: CanaryAuditConfig) -> dict:
    """One model's canary section (:func:`canary_test`) for the canaries and sealed assignment of
    ``config.canaries``: what the audit's canary probe records per model."""
    canaries = read_canaries(config.canaries)
    is_deleted = np.isin(canaries.ids, read_sealed(config.canaries, canaries).included)
    calibration = calibration_half(canaries.ids.size, is_deleted, config.seed)
    return canary_test(score_canaries(model, dataset, canaries, config), is_deleted, calibration, config)


def run_canary_audit(config: CanaryAuditConfig, render: Callable[[Path], object] | None = None) -> dict:
    """Run the canary audit and write ``config.out`` atomically (``canary_results.json``, ``scores/canaries.csv``,
    and what ``render`` makes of the results, e.g. :func:`reports.html.write_canary_report`); returns the results
    document."""
    started = time.perf_counter()
    canaries = read_canaries(config.canaries)
    sealed = read_sealed(config.canaries, canaries)
    models = {"unlearned": load_model(config.unlearned), "original": load_model(config.model)}
    for role, path in (("original", config.model), ("unlearned", config.unlearned)):
        check_model_commitment(DiffusionModel.read_metadata(path), canaries, f"the {role} model {path}")
    dataset = load_data_for_model(canaries.data, models["original"])
    canaries.check_data(dataset)
    is_deleted = np.isin(canaries.ids, sealed.included)
    calibration = calibration_half(canaries.ids.size, is_deleted, config.seed)
    with atomic_output_dir(config.out, config.force, {"canary folder": config.canaries, "original model":
                                                      config.model, "unlearned model": config.unlearned}) as out:
        scores = {role: score_canaries(model, dataset, canaries, config) for role, model in models.items()}
        sections = {role: canary_test(scores[role], is_deleted, calibration, config) for role in ROLES}
        verdict, why = canary_verdict(sections, config)
        (out / "scores").mkdir()
        with open(out / "scores" / "canaries.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["attack", "model", "sample_id", "is_deleted", "half", "score"])
            for role in ROLES:
                for name, values in scores[role].items():
                    for i, value in enumerate(values):
                        writer.writerow([name, role, int(canaries.ids[i]), int(is_deleted[i]),
                                         "calibration" if calibration[i] else "test", repr(float(value))])
        results = {"verdict": verdict, "why": why, "config": vars(config).copy(),
                   "canaries": {"num_canaries": int(canaries.ids.size), "num_deleted": int(is_deleted.sum()),
                                "commitment": canaries.commitment, "data": canaries.data},
                   "unlearned": sections["unlearned"], "original": sections["original"],
                   "environment": environment_info(), "seconds": time.perf_counter() - started}
        write_json(out / "canary_results.json", results)
        if render is not None:
            render(out / "canary_results.json")
    return results
