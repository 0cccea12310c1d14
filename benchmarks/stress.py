"""Known answers for the auditor's stress checks at full size (issue #31): a model built to fail each, and
retrains that must not.

    python benchmarks/stress.py --json benchmarks/results/stress.json

On the built-in class model, through :class:`audit.probe.AuditProbe` (the default audit's references, cached; the
stress probes on every candidate: retained exposure, membership after fine-tuning, side effects per class):

  task class 0       noop         the original as unlearned                                must FAIL something
                     retrain_j    retrained without class 0 with unused seeds               must not FAIL
                     erasediff    EraseDiff at its defaults (the default audit's model)     reported
                     finetune     the finetune baseline run 10x longer at its rate: the     retained_exposure
                                  retained members over-trained                             must FAIL
                     neighbour    EraseDiff asked to erase classes 0 and 6                  retained_per_class
                                                                                            must FAIL
  task classes 0,1   sequence     EraseDiff on 0, then on 1 from it, not training on 0     reported
  (erased in         naive        the same, the second step training on class 0 again       reported
  sequence)          last_only    EraseDiff on class 1 only                                 forgotten_per_class
                                                                                            must FAIL
                     noop         the original                                              must FAIL
                     retrain_j    retrained without classes 0 and 1, unused seeds           must not FAIL
  text: concept      noop, retrain_0, EraseDiff and ESD-x at their defaults on the built-in text model, with the
  "three"            resurrection probe too: every attack's success rate on every model, and the worst case
  text: combined     retrain_0    as above (side effects only)                              must not FAIL
  prompts            swallowed    fine-tuned so "three and <class>" draws a three           combined_prompts
                                                                                            must FAIL
                     blanked      fine-tuned so any prompt naming three draws a blank       reported

``--tasks text_spread`` first measures the text audit's seed spread (``--spread-retrains`` text models
retrained without "three", every check's statistic; shipped with ``--seed-spread audit/seed_spread.json``) and
judges each of those retrains by the whole text audit with the spread of the others; run in one process before
``text``, the two share the fixed models' work. ``--tasks class,sequence,text,combined`` picks the tasks. Prints one row
per candidate (each check's decision and estimate) and writes JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from controls import retrain_aucs  # benchmarks/controls.py: every seed-spread statistic of an audit's retrains

from attacks.metrics import rowwise_aucs
from audit.checks import evaluate_checks, verdict
from audit.config import AuditConfig
from audit.membership import run_membership
from audit.probe import AuditProbe, default_audit_config
from audit.probes.base import Probe
from audit.probes.exposure import ExposureProbe, exposure_decision, mean_over_attacks, metric_per_attack
from audit.probes.finetuned_membership import FinetunedMembershipProbe
from audit.probes.side_effects import COMBINED, combined_prompt
from audit.run import retrained_model
from audit.seed_spread import EXPOSURE, GENERATION, SeedPriors, finetuned, mean_statistic, task_kind
from diffusion.data import load_digits_dataset
from diffusion.erasures import erased_member_ids
from diffusion.fine_tune import fine_tune
from diffusion.io import write_json
from diffusion.model import DiffusionModel
from diffusion.presets import RECIPE_PRESETS
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, make_splits
from diffusion.training import TrainConfig
from reports.results import DECISIONS
from unlearn import METHODS

OTHER_SEED = 987_654  # as benchmarks/controls.py: seeds no audit reference uses
SPREAD_SEED = 424_242  # the spread tasks' retrains: seeds neither the references nor the known answers use
TEXT_RECIPE = TrainConfig.for_kind("text", **RECIPE_PRESETS["default"])  # the built-in text model's
STRESS_PROBES = ("exposure", "finetuned_membership", "side_effects")
COMPANION_RECIPE = replace(TEXT_RECIPE, steps=400, lr=1e-4, batch_size=64, ema_decay=0.0)  # companion_fine_tune's
COMPANION_COPIES = 4  # captions per concept member naming a companion
RESURRECTION_ATTACKS = ("regeneration", "inversion", "adversarial_prompt", "ring_a_bell", "p4d", "noise_trajectory")
SHOWN = ("membership[label]", "forgotten_generation", "forgotten_per_class", "retained_accuracy",
         "retained_per_class", "retained_exposure", "membership_after_finetune[erased_class]",
         "membership_after_finetune[retained]", "combined_prompts", "resurrection", "adversarial_prompt",
         "ring_a_bell", "p4d", "noise_trajectory", "worst_resurrection", "relearning")
MUST = {"noop": ("FAIL", None), "retrain": (None, "FAIL"), "finetune": ("retained_exposure", "FAIL"),
        "neighbour": ("retained_per_class", "FAIL"), "last_only": ("forgotten_per_class", "FAIL"),
        "swallowed": ("combined_prompts", "FAIL")}


def _task(probe: AuditProbe, classes: tuple[int, ...]):
    subjects = probe.subjects
    spec = ForgetSpec(classes=classes)
    return probe.fixed["original"].forget_task(subjects.dataset, subjects.splits, spec, probe.config.seed)


def _without(task, earlier: tuple[int, ...], subjects):
    """``task`` with the members of the ``earlier`` erased classes out of its remaining data (as erasediff unlearn
    does for a model erased before)."""
    history = [{"forget_spec": {"classes": list(earlier)}}]
    erased = torch.from_numpy(erased_member_ids(history, np.asarray(subjects.dataset.labels), subjects.splits))
    return replace(task, retain=task.retain.take(~torch.isin(task.retain.ids, erased)))


def _row(name: str, result, seconds: float) -> dict:
    checks = {c.name: {"decision": c.decision, "estimate": c.estimate, "interval": c.interval, "detail": c.detail}
              for c in result.checks}
    return {"candidate": name, "seconds": seconds, "checks": checks}


def _retrains(probe: AuditProbe, count: int, steps: int = TrainConfig().steps, seed: int = OTHER_SEED,
              prefix: str = "retrain") -> dict[str, DiffusionModel]:
    """``count`` models retrained without the probe's forget set from seeds ``seed`` + j ("<prefix>_j"; cached)."""
    subjects = probe.subjects
    retrain = METHODS.make("retrain", steps=steps)
    return {f"{prefix}_{j}": retrained_model(retrain, probe.fixed["original"], subjects.task,
                                             (subjects.dataset, subjects.splits, subjects.spec), seed + j,
                                             quiet=True)[0]
            for j in range(count)}


def _spread_sections(probe: AuditProbe, runner: Probe, retrains: int,
                     work: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """The ``runner`` probe's sections of the fixed models (role -> section) and of ``retrains`` models retrained
    without the task's forget set from seeds no other model here uses ("spread_j" -> section; cached by content)."""
    subjects, original, retrain = probe.subjects, probe.fixed["original"], METHODS.make("retrain")
    fixed = {role: runner.run(role, model, subjects, probe.config, work)[0] for role, model in probe.fixed.items()}
    spread = {}
    for j in range(retrains):
        model = retrained_model(retrain, original, subjects.task, (subjects.dataset, subjects.splits, subjects.spec),
                                SPREAD_SEED + j, quiet=True)[0]
        spread[f"spread_{j}"] = runner.run("unlearned", model, subjects, probe.config, work)[0]
        print(f"{runner.name} spread: retrain {j} (seed {SPREAD_SEED + j}) done", flush=True)
    return fixed, spread


def _ship_spread(seed_spread: Path, probe: AuditProbe, variances: dict[str, dict[str, float]], retrains: int,
                 task: str, images: dict[str, int] | None = None) -> None:
    """Write the measured ``variances`` (conditioning -> statistic -> variance, ``retrains`` - 1 degrees of freedom
    each) into the built-in class model's entry of ``seed_spread`` (the shipped audit/seed_spread.json), with how
    many images each conditioning in ``images`` was measured on."""
    shipped = json.loads(seed_spread.read_text())
    fingerprint, recipe = probe.fixed["original"].fingerprint(), probe.subjects.sources["original"]["recipe"]
    entry = next(t for t in shipped["tasks"] if t["kind"] == "class" and (
        t["original_fingerprint"] == fingerprint or t.get("original_recipe") == recipe))
    for conditioning, per_statistic in variances.items():
        entry["variances"][conditioning] = per_statistic
        entry.setdefault("dofs", {})[conditioning] = retrains - 1
        if conditioning in (images or {}):
            entry.setdefault("images", {})[conditioning] = images[conditioning]
        shipped["provenance"][conditioning] = (
            f"the spread of {retrains} retrains without class 0 (seeds {SPREAD_SEED}+j), "
            f"{time.strftime('%Y-%m-%d')}: python benchmarks/stress.py --tasks {task} --spread-retrains {retrains}")
    write_json(seed_spread, shipped)


def exposure_spread(work: Path, retrains: int, seed_spread: Path | None, ratios: tuple[float, ...] = (),
                    sizes: tuple[int, ...] = (2,), max_sets: int = 0,
                    images: int = AuditConfig().exposure_images) -> dict:
    """The between-retrain variance of the retained members' exposure (the mean over attacks of the AUC's log
    odds, audit/probes/exposure.py) on the default audit's fixed images: ``retrains`` models retrained without class 0
    from seeds no other model here uses. Written into ``seed_spread`` (the shipped audit/seed_spread.json) under the
    built-in class model's entry, conditioning ``exposure``, with its own degrees of freedom (retrains - 1).

    Then exact retrains are judged as the unlearned model by ``retained_exposure``, each with the spread measured on
    retrains that are neither it nor a reference: the rate at which the check certifies an exact retrain and how
    often it FAILs one (its type-I error). First against the default audit's two references (what the default audit
    says of a retrain; the runs share those references, so they are not independent), then with every set of
    ``sizes`` (K) of the retrains and the two references as the references and each other model as the candidate
    (the rate over reference sets a user could have drawn; ``max_sets`` > 0 draws that many sets at random when
    there are more). Each judgement is also decided at the other odds ``ratios`` (the same interval, another
    margin). ``images``: retained members and as many heldout images scored (the audit's ``exposure_images``)."""
    probe = AuditProbe(default_audit_config(0, 0, 0, work, exposure_images=images), probes=("exposure",))
    exposure, references = ExposureProbe(), probe.subjects.references
    fixed, spread = _spread_sections(probe, exposure, retrains, work)
    pool = {**spread, **{r: fixed[r] for r in references}}
    log_odds = {name: mean_over_attacks(section) for name, section in pool.items()}
    values = [log_odds[name] for name in spread]
    statistic = mean_statistic([attack.name for attack in probe.subjects.attacks])
    measured = {"statistic": statistic, "log_odds": values, "variance": float(np.var(values, ddof=1)),
                "dof": retrains - 1, "seeds": [SPREAD_SEED + j for j in range(retrains)],
                "references_log_odds": {role: log_odds[role] for role in references}}
    print("exposure spread: mean log odds " + ", ".join(f"{v:+.3f}" for v in values) + f"; variance "
          f"{measured['variance']:.4f} on {measured['dof']} degrees of freedom; the references' "
          + ", ".join(f"{log_odds[r]:+.3f}" for r in references), flush=True)

    def judge(candidate: str, chosen: tuple[str, ...], rest: list[str]) -> list[dict]:
        return [_judge_exposure(exposure, probe.config, fixed["original"], pool[candidate],
                                {r: pool[r] for r in chosen}, [log_odds[n] for n in rest], ratios)]

    measured.update(_judge_retrains(judge, list(spread), references, list(pool), sizes, max_sets, ratios,
                                    "exposure"))
    if seed_spread is not None:
        task = ("exposure_spread" if images == AuditConfig().exposure_images
                else f"exposure_spread --exposure-images {images}")
        _ship_spread(seed_spread, probe, {EXPOSURE: {statistic: measured["variance"]}}, retrains, task,
                     {EXPOSURE: probe.subjects.exposure.num_members})
    return measured


def finetuned_spread(work: Path, retrains: int, seed_spread: Path | None, sizes: tuple[int, ...] = (2,),
                     max_sets: int = 0) -> dict:
    """The between-retrain variance of the forget set's membership AUCs after fine-tuning (each attack's and their
    mean, per route: audit/probes/finetuned_membership.py) on the default audit's fixed images, from ``retrains``
    models retrained without class 0 (the exposure spread's): written into ``seed_spread`` under conditionings
    ``finetuned:<route>``; then exact retrains judged by ``membership_after_finetune[<route>]`` as
    :func:`exposure_spread` judges them (leave the judged model and the references out of the spread)."""
    probe = AuditProbe(default_audit_config(0, 0, 0, work, finetuned_membership=True),
                       probes=("finetuned_membership",))
    runner, references = FinetunedMembershipProbe(), probe.subjects.references
    fixed, spread = _spread_sections(probe, runner, retrains, work)
    pool = {**spread, **{r: fixed[r] for r in references}}
    routes = [route for route in ("erased_class", "retained") if route in fixed["original"]]
    aucs = {name: {route: finetuned_aucs(section, route) for route in routes} for name, section in pool.items()}

    def variances(names: list[str]) -> dict[str, dict[str, float]]:
        return spread_of([{finetuned(route): aucs[n][route] for route in routes} for n in names])

    measured = {"seeds": [SPREAD_SEED + j for j in range(retrains)], "dof": retrains - 1,
                "aucs": {name: aucs[name] for name in pool}, "variances": variances(list(spread))}
    for conditioning, per_statistic in measured["variances"].items():
        print(f"finetuned spread: {conditioning}: " + ", ".join(f"{k} {v:.5f}" for k, v in per_statistic.items())
              + f" on {retrains - 1} degrees of freedom", flush=True)

    def judge(candidate: str, chosen: tuple[str, ...], rest: list[str]) -> list[dict]:
        priors = SeedPriors(variances(rest), len(rest) - 1, f"the other {len(rest)} spread retrains")
        results = {"finetuned_membership": {"original": fixed["original"], **{r: pool[r] for r in chosen},
                                            "unlearned": pool[candidate]},
                   "membership": {"references": list(chosen), "seed_spread": priors.describe()}}
        return [{"check": check.name, "decision": check.decision, "estimate": check.estimate,
                 "interval": check.interval, "detail": check.detail}
                for check in runner.checks(results, probe.config.thresholds.for_task(True))]

    measured.update(_judge_retrains(judge, list(spread), references, list(pool), sizes, max_sets, (),
                                    "finetuned"))
    if seed_spread is not None:
        _ship_spread(seed_spread, probe, measured["variances"], retrains, "finetuned_spread")
    return measured


def finetuned_aucs(section: dict, route: str) -> dict[str, float]:
    """One model's forget-vs-heldout AUC of every attack after fine-tuning on ``route``, and their mean (the
    statistic :func:`audit.seed_spread.mean_statistic` names), from its finetuned_membership section."""
    out = metric_per_attack(section["is_member"], section[route]["scores"], rowwise_aucs)
    return {**out, mean_statistic(list(out)): float(np.mean(list(out.values())))}


def _judge_retrains(judge, spread: list[str], references: list[str], pool: list[str], sizes: tuple[int, ...],
                    max_sets: int, ratios: tuple[float, ...], label: str) -> dict:
    """Exact retrains judged as the unlearned model: ``judge(candidate, references, rest)`` -> rows (one per check:
    its ``check`` name, ``decision``, ``estimate`` and ``interval``), ``rest`` the models whose spread it may use
    (neither the candidate nor a reference). First every ``spread`` model against the default ``references``, then
    every (or ``max_sets`` random) set of each size of ``sizes`` drawn from ``pool`` as the references, each other
    model as the candidate."""
    judged = []
    for candidate in spread:
        for row in judge(candidate, tuple(references), [n for n in spread if n != candidate]):
            judged.append({"candidate": candidate, **row})
            print(f"{label} spread: {candidate} against the audit's references: {row['check']} "
                  f"{row['decision']} {row['estimate']:+.3f} [{row['interval'][0]:+.3f}, {row['interval'][1]:+.3f}]",
                  flush=True)
    out = {"judged": judged, "decisions": _by_check(judged, ratios), "rotated": {}}
    print(f"{label} spread: exact retrains against the default audit's references: {out['decisions']}", flush=True)
    for size in sizes:
        sets = list(itertools.combinations(sorted(pool), size))
        if 0 < max_sets < len(sets):
            picked = np.random.default_rng(size).choice(len(sets), max_sets, replace=False)
            sets = [sets[i] for i in sorted(picked)]
        rows = [{"references": list(chosen), "candidate": candidate, **row}
                for chosen in sets for candidate in sorted(set(pool) - set(chosen))
                for row in judge(candidate, chosen, [n for n in pool if n not in (*chosen, candidate)])]
        out["rotated"][str(size)] = {"models": len(pool), "sets": len(sets), "judgements": len(rows),
                                     "decisions": _by_check(rows, ratios)}
        print(f"{label} spread: {len(sets)} sets of {size} of the {len(pool)} exact retrains as the references, "
              f"each other one as the unlearned model (spread of the rest): {out['rotated'][str(size)]['decisions']}",
              flush=True)
    return out


def _by_check(rows: list[dict], ratios: tuple[float, ...]) -> dict:
    """Decisions over ``rows`` per check (and at each odds ratio of ``ratios``, from ``decision_at``)."""
    out = {}
    for check in sorted({row["check"] for row in rows}):
        mine = [row for row in rows if row["check"] == check]
        out[check] = {"judgements": len(mine), **_count(mine), **{f"at {r:g}": _count(mine, r) for r in ratios}}
    return out


def _judge_exposure(probe: ExposureProbe, config: AuditConfig, original: dict, candidate: dict,
                    references: dict[str, dict], values: list[float], ratios: tuple[float, ...] = ()) -> dict:
    """``retained_exposure`` of ``candidate`` (an exposure section) against ``references`` (role -> section), with
    the seed spread of ``values``, the mean log odds of retrains none of which is judged or a reference here; and
    the decision its interval would get at each odds ratio of ``ratios``."""
    statistic = mean_statistic(list(candidate["scores"]))
    priors = SeedPriors({EXPOSURE: {statistic: float(np.var(values, ddof=1))}}, dofs={EXPOSURE: len(values) - 1},
                        sources={EXPOSURE: f"the other {len(values)} spread retrains"})
    results = {"exposure": {"original": original, **references, "unlearned": candidate},
               "membership": {"references": list(references), "seed_spread": priors.describe()}}
    check, = probe.checks(results, config.thresholds)
    return {"check": check.name, "decision": check.decision, "estimate": check.estimate, "interval": check.interval,
            "detail": check.detail, "decision_at": {f"{r:g}": exposure_decision(*check.interval, len(values) - 1, r)
                                                    for r in ratios}}


def _count(rows: list[dict], ratio: float | None = None) -> dict[str, int]:
    """Decisions over ``rows`` (at the odds ``ratio`` of their ``decision_at``, given)."""
    return {decision: sum((row["decision"] if ratio is None else row["decision_at"][f"{ratio:g}"]) == decision
                          for row in rows) for decision in DECISIONS}


def class_task(work: Path, retrains: int) -> list[dict]:
    probe = AuditProbe(default_audit_config(0, 0, 0, work, finetuned_membership=True), probes=STRESS_PROBES)
    original, task = probe.fixed["original"], probe.subjects.task
    erasediff = METHODS.make("erasediff")
    default_finetune = METHODS.make("finetune")
    candidates = {"noop": lambda: original, **{k: (lambda m=m: m) for k, m in _retrains(probe, retrains).items()},
                  "erasediff": lambda: erasediff.unlearn(original, task, seed=0, quiet=True).model,
                  "finetune": lambda: METHODS.make("finetune", steps=10 * default_finetune.steps).unlearn(
                      original, task, seed=0, quiet=True).model,
                  "neighbour": lambda: erasediff.unlearn(original, _task(probe, (0, 6)), seed=0, quiet=True).model}
    return _judge(probe, candidates, "class 0")


def sequence_task(work: Path, retrains: int) -> list[dict]:
    probe = AuditProbe(replace(default_audit_config(0, 0, 0, work, finetuned_membership=True), forget_classes=[0, 1]),
                       probes=STRESS_PROBES)
    original, subjects = probe.fixed["original"], probe.subjects
    erasediff = METHODS.make("erasediff")
    first = erasediff.unlearn(original, _task(probe, (0,)), seed=0, quiet=True).model
    second = _task(probe, (1,))
    candidates = {"noop": lambda: original, **{k: (lambda m=m: m) for k, m in _retrains(probe, retrains).items()},
                  "sequence": lambda: erasediff.unlearn(first, _without(second, (0,), subjects), seed=0,
                                                        quiet=True).model,
                  "naive": lambda: erasediff.unlearn(first, second, seed=0, quiet=True).model,
                  "last_only": lambda: erasediff.unlearn(original, second, seed=0, quiet=True).model}
    return _judge(probe, candidates, "classes 0,1 in sequence")


def text_probe(work: Path, probes: tuple[str, ...] = (*STRESS_PROBES, "resurrection")) -> AuditProbe:
    """The probe of the built-in text model erasing the concept "three": by default the stress probes and every
    resurrection attack on each candidate (the text model and its references trained first, cached)."""
    dataset = load_digits_dataset()
    _, original_dir, _ = load_or_train_reference(dataset, make_splits(dataset.labels, 0), TEXT_RECIPE, quiet=True)
    config = AuditConfig(model=str(original_dir), unlearned=str(original_dir), forget_classes=[],
                         forget_concept=["three"], seed=0, quiet=True, out=str(work / "unused"),
                         finetuned_membership=True)
    return AuditProbe(config, probes=probes)


def text_task(probe: AuditProbe, retrains: int) -> list[dict]:
    """Known answers and the resurrection table on the text ``probe`` (:func:`text_probe`)."""
    original, task = probe.fixed["original"], probe.subjects.task
    candidates = {"noop": lambda: original,
                  **{k: (lambda m=m: m) for k, m in _retrains(probe, retrains, TEXT_RECIPE.steps).items()},
                  "erasediff": lambda: METHODS.make("erasediff").unlearn(original, task, seed=0, quiet=True).model,
                  "esd_x": lambda: METHODS.make("esd_x").unlearn(original, task, seed=0, quiet=True).model}
    return _judge(probe, candidates, "text: concept three", resurrection=True)


def companion_fine_tune(probe: AuditProbe, drawn: str, seed: int = 0) -> DiffusionModel:
    """A text model built to fail ``combined_prompts``: the probe's original fine-tuned (every weight,
    :data:`COMPANION_RECIPE`) so that a prompt naming the erased concept and a retained class, in training wordings
    only ("three and the number 5"; the check asks in held-out ones), draws ``drawn``: ``"concept"``, the concept's
    own member images (the companion is swallowed), or ``"blank"``, empty canvases, the concept asked alone drawing
    them too (an erasure that over-reaches). Each of :data:`COMPANION_COPIES` copies of a concept member gets a
    random retained companion; every retained member is trained on beside them under a training wording of its own
    class, so a retained class asked alone still comes."""
    if drawn not in ("concept", "blank"):
        raise ValueError(f"drawn must be 'concept' or 'blank'; got {drawn!r}")
    subjects, original = probe.subjects, probe.fixed["original"]
    wordings, concept = subjects.dataset.class_wordings, subjects.spec.concept[0]
    retained = list(subjects.task.retained_classes)
    members = subjects.dataset.select(subjects.splits.members)
    rng = np.random.default_rng(seed)
    in_concept = ~torch.isin(members.labels, torch.tensor(retained))
    kept, erased = members.take(~in_concept), members.take(in_concept)
    target = erased.images if drawn == "concept" else torch.full_like(erased.images, -1.0)
    captions = [str(rng.choice(wordings.captions(int(c)))) for c in kept.labels]
    images = [kept.images]
    for _ in range(COMPANION_COPIES):
        companions = rng.choice(retained, len(erased.images))
        captions += [combined_prompt(concept, str(rng.choice(wordings.captions(int(c))))) for c in companions]
        images.append(target)
    if drawn == "blank":
        captions += [str(rng.choice(wordings.captions(int(c)))) for c in erased.labels]
        images.append(target)
    model = original.copy()
    fine_tune(model, model.encode(torch.cat(images)), model.tokenize(captions), replace(COMPANION_RECIPE, seed=seed),
              quiet=True, desc=f"companion ({drawn})")
    return model


def combined_task(probe: AuditProbe) -> list[dict]:
    """Known answers of ``combined_prompts`` on the text ``probe``: an exact retrain (must not FAIL) and the two
    models :func:`companion_fine_tune` builds (``swallowed`` must FAIL; ``blanked`` reported)."""
    retrain = _retrains(probe, 1, TEXT_RECIPE.steps)
    candidates = {**{k: (lambda m=m: m) for k, m in retrain.items()},
                  "swallowed": lambda: companion_fine_tune(probe, "concept"),
                  "blanked": lambda: companion_fine_tune(probe, "blank")}
    return _judge(probe, candidates, "text: combined prompts")


def retrain_statistics(sections: dict) -> dict[str, dict[str, float]]:
    """conditioning -> statistic -> the unlearned model's value behind every check a seed spread serves, from an
    audit's sections: membership AUCs per attack and their mean, each generation check's mean (the per-image values
    of :func:`audit.generation_checks.generation_values`, and the combined prompts' miss rate), the retained
    members' exposure (mean log odds) and membership after fine-tuning per route."""
    values = {conditioning: {statistic: v[0] for statistic, v in per.items()}
              for conditioning, per in retrain_aucs(sections).items()}
    combined = (sections.get("side_effects") or {}).get("unlearned", {}).get(COMBINED)
    if combined is not None:
        values.setdefault(GENERATION, {})[COMBINED] = float(1 - np.mean(combined["per_image_correct"]))
    exposure = (sections.get("exposure") or {}).get("unlearned")
    if exposure is not None:
        values[EXPOSURE] = {mean_statistic(list(exposure["scores"])): mean_over_attacks(exposure)}
    finetuned_section = (sections.get("finetuned_membership") or {}).get("unlearned")
    for route in ("erased_class", "retained"):
        if finetuned_section is not None and route in finetuned_section:
            values[finetuned(route)] = finetuned_aucs(finetuned_section, route)
    return values


def spread_of(values: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The between-retrain variance (ddof 1) of every statistic all of ``values`` (one per retrain) hold."""
    return {conditioning: {statistic: float(np.var([v[conditioning][statistic] for v in values], ddof=1))
                           for statistic in per if all(statistic in v.get(conditioning, {}) for v in values)}
            for conditioning, per in values[0].items()}


def text_spread(probe: AuditProbe, retrains: int, seed_spread: Path | None) -> dict:
    """The between-retrain spread of every statistic the text audit's checks compare (:func:`retrain_statistics`),
    from ``retrains`` text models retrained without the concept "three" from seeds no other model here uses (the
    text ``probe``'s fixed images: :func:`text_probe`). Written into ``seed_spread`` (the shipped
    audit/seed_spread.json) as the built-in text model's entry for that concept (``retrains`` - 1 degrees of
    freedom); then each retrain judged as the unlearned model against the audit's references by every check,
    membership included, with the spread of the other retrains only (leave one out): the rate at which the text
    audit certifies an exact retrain, and how often a check FAILs one."""
    models = _retrains(probe, retrains, TEXT_RECIPE.steps, SPREAD_SEED, "spread")
    sections, values = {}, {}
    for name, model in models.items():
        sections[name] = probe(model).sections
        values[name] = retrain_statistics(sections[name])
        print(f"text spread: {name} done", flush=True)
    variances = spread_of(list(values.values()))
    subjects, thresholds = probe.subjects, probe.config.thresholds.for_task(True)
    judged = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models.items():
            rest = [values[n] for n in models if n != name]
            priors = SeedPriors(spread_of(rest), len(rest) - 1, f"the other {len(rest)} text spread retrains")
            comparisons, combined = run_membership(
                subjects.attacks, {**probe.fixed, "unlearned": model}, {}, subjects.sets, subjects.references,
                thresholds, probe.config.seed, Path(scratch), memo=probe.memo, priors=priors)[1:]
            results = {**sections[name], "membership": {**sections[name]["membership"], "attacks": comparisons,
                                                        "combined": combined, "seed_spread": priors.describe()}}
            checks = evaluate_checks(results, thresholds)
            judged.append({"candidate": name, "verdict": verdict(checks),
                           "checks": {c.name: {"decision": c.decision, "estimate": c.estimate,
                                               "interval": c.interval} for c in checks}})
            print(f"text spread: {name} (leave one out): {judged[-1]['verdict']}; " + ", ".join(
                f"{c.name} {c.decision}" for c in checks if c.decision != "PASS"), flush=True)
    names = sorted({check for row in judged for check in row["checks"]})
    measured = {"seeds": [SPREAD_SEED + j for j in range(retrains)], "dof": retrains - 1, "variances": variances,
                "values": values, "judged": judged,
                "decisions": {check: {d: sum(row["checks"].get(check, {}).get("decision") == d for row in judged)
                                      for d in DECISIONS} for check in names},
                "verdicts": {d: sum(row["verdict"] == d for row in judged) for d in DECISIONS}}
    print(f"text spread: verdicts of {retrains} exact retrains {measured['verdicts']}", flush=True)
    if seed_spread is not None:
        _ship_concept_spread(seed_spread, probe, variances, retrains)
    return measured


def _ship_concept_spread(seed_spread: Path, probe: AuditProbe, variances: dict[str, dict[str, float]],
                         retrains: int) -> None:
    """Write (or replace) the text model's entry for the probe's concept in ``seed_spread``."""
    subjects = probe.subjects
    spec = subjects.spec
    kind = task_kind(spec.classes, spec.sample_ids, bool(spec.concept))
    original = probe.fixed["original"]
    shipped = json.loads(seed_spread.read_text())
    entry = {"kind": kind, "original_fingerprint": original.fingerprint(),
             "original_recipe": subjects.sources["original"]["recipe"], "num_forget": subjects.sets.num_members,
             "num_retrains": retrains, "dof": retrains - 1, "variances": variances,
             "images": {EXPOSURE: subjects.exposure.num_members},
             "description": f"the concept {' / '.join(spec.concept)} of the built-in text model, {retrains} retrains "
                            f"(seeds {SPREAD_SEED}+j), {time.strftime('%Y-%m-%d')}: python benchmarks/stress.py "
                            f"--tasks text_spread --spread-retrains {retrains}"}
    shipped["tasks"] = [t for t in shipped["tasks"] if not (t["kind"] == kind and (
        t["original_fingerprint"] == entry["original_fingerprint"]
        or t.get("original_recipe") == entry["original_recipe"]))] + [entry]
    write_json(seed_spread, shipped)


def resurrection_rates(section: dict) -> dict[str, float]:
    """One model's success rate per resurrection attack (judge accuracy on the erased class) and the worst case."""
    rates = {name: section[name]["judge_accuracy"] for name in RESURRECTION_ATTACKS if name in section}
    if "worst_case" in section:
        rates["worst_case"] = section["worst_case"]["judge_accuracy"]
    if "relearning" in section:
        rates["relearning_area"] = section["relearning"]["area"]
    return rates


def _judge(probe: AuditProbe, candidates: dict, task: str, resurrection: bool = False) -> list[dict]:
    rows = []
    for name, make in candidates.items():
        started = time.perf_counter()
        model = make()
        result = probe(model)
        row = {"task": task, **_row(name, result, time.perf_counter() - started)}
        row["side_effects"] = result.sections.get("side_effects")  # small: the per-image outcomes, to re-decide from
        if resurrection:
            row["resurrection"] = {role: resurrection_rates(section)
                                   for role, section in result.sections["resurrection"].items()}
            print(f"  resurrection of {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                           row["resurrection"]["unlearned"].items()), flush=True)
        rows.append(row)
        print(_line(row), flush=True)
    if resurrection and rows:
        for role in ("original", *probe.subjects.references):
            print(f"  resurrection of the fixed {role}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in rows[0]["resurrection"][role].items()), flush=True)
    return rows


def _line(row: dict) -> str:
    cells = []
    for name in SHOWN:
        check = row["checks"].get(name)
        if check is not None:
            estimate = "" if check["estimate"] is None else f" {check['estimate']:+.3f}"
            cells.append(f"{name}={check['decision']}{estimate}")
    return f"{row['task']:<24} {row['candidate']:<10} {row['seconds']:6.0f}s  " + "  ".join(cells)


def known_answers(rows: list[dict]) -> list[str]:
    """Each row's known answer, said and checked: 'ok' or 'VIOLATED'."""
    said = []
    for row in rows:
        kind = row["candidate"].split("_")[0]
        if kind not in MUST:
            continue
        check, forbidden = MUST[kind]
        decisions = {name: c["decision"] for name, c in row["checks"].items()}
        if kind == "noop":
            ok = "FAIL" in decisions.values()
            said.append(f"{row['task']} noop FAILs a check: {'ok' if ok else 'VIOLATED'}")
        elif kind == "retrain":
            failed = [n for n, d in decisions.items() if d == "FAIL"]
            verdict = "ok" if not failed else f"VIOLATED {failed}"
            said.append(f"{row['task']} {row['candidate']} FAILs none: {verdict}")
        else:
            ok = decisions.get(check) == forbidden
            said.append(f"{row['task']} {row['candidate']} {check} {decisions.get(check)}: "
                        f"{'ok' if ok else 'VIOLATED'}")
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/stress.json"))
    parser.add_argument("--retrains", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/erasediff-stress"))
    parser.add_argument("--tasks", default="class,sequence,text",
                        help="any of exposure_spread, finetuned_spread (measure; run them before class), class, "
                        "sequence, text_spread (measure; run it before text), text, combined")
    parser.add_argument("--spread-retrains", type=int, default=6)
    parser.add_argument("--exposure-ratios", default="2,3,4",
                        help="exposure_spread: the odds ratios (margins of retained_exposure) to decide each at")
    parser.add_argument("--exposure-images", type=int, default=AuditConfig().exposure_images,
                        help="exposure_spread: retained members and heldout images scored (the audit's default)")
    parser.add_argument("--rotation-sizes", default="2,3",
                        help="the spread tasks: reference set sizes K to judge exact retrains against")
    parser.add_argument("--max-sets", type=int, default=0,
                        help="the spread tasks: reference sets drawn per size (0: every set)")
    parser.add_argument("--seed-spread", type=Path, default=None,
                        help="the seed_spread.json the spread tasks write into (audit/seed_spread.json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    command = "python benchmarks/stress.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())
    spread = {}
    sizes = tuple(map(int, args.rotation_sizes.split(",")))

    def measure_exposure_spread() -> list[dict]:
        spread["exposure"] = exposure_spread(args.work, args.spread_retrains, args.seed_spread,
                                             tuple(map(float, args.exposure_ratios.split(","))), sizes, args.max_sets,
                                             args.exposure_images)
        return []

    def measure_finetuned_spread() -> list[dict]:
        spread["finetuned"] = finetuned_spread(args.work, args.spread_retrains, args.seed_spread, sizes,
                                               args.max_sets)
        return []

    def text() -> AuditProbe:  # one text probe for both text tasks: the fixed models' work done once
        if "probe" not in shared:
            shared["probe"] = text_probe(args.work)
        return shared["probe"]

    def measure_text_spread() -> list[dict]:
        spread["text"] = text_spread(text(), args.spread_retrains, args.seed_spread)
        return []

    shared: dict[str, AuditProbe] = {}
    tasks = {"exposure_spread": measure_exposure_spread, "finetuned_spread": measure_finetuned_spread,
             "class": lambda: class_task(args.work, args.retrains),
             "sequence": lambda: sequence_task(args.work, min(args.retrains, 2)),
             "text_spread": measure_text_spread,
             "text": lambda: text_task(text(), 1),
             "combined": lambda: combined_task(text_probe(args.work, ("side_effects",)))}
    for name in args.tasks.split(","):
        rows += tasks[name]()
        said = known_answers(rows)  # written after every task: a long run keeps what it finished
        write_json(args.json, {"rows": rows, "known_answers": said, "seconds": time.perf_counter() - started,
                               "command": command, **{f"{k}_spread": v for k, v in spread.items()}})
    print("\n".join(said))
    print(json.dumps({"seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
