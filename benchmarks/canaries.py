"""Known answers for the canary audit at full size: its level on exact retrains, its power at M = 50, 100, 200.

    python benchmarks/canaries.py --work /tmp/canaries --json benchmarks/results/canaries.json

On the bundled digits: 400 canaries drawn from the heldout images (``diffusion.canaries``), each included with
probability 1/2; a model trained on the members and the included canaries (the default recipe); a deletion request
of 50 random members plus every included canary. Models, each scored once by every attack on every canary:

  noop        the original itself                                          must never PASS
  early       EraseDiff stopped after 10% of its steps                     must never PASS
  erasediff   EraseDiff at its defaults                                     reported as it comes
  retrain     trained from scratch on the members minus the 50, no canary   FAILs at rate alpha, by construction
  reference   the built-in reference (the members, no canary)              another exact answer for the canaries

The canary verdict of each model under the real assignment; then, on each exact model, the verdict under many
fresh random assignments (the canaries it never saw are exchangeable whatever the assignment: its FAIL rate is the
test's type-I error), and for every model the verdict on random subsets of M deleted and M never-included canaries
(M = 50, 100, 200 where the canaries allow), the original's power section taken on the same subset. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from attacks import ATTACKS
from audit.canary import CanaryAuditConfig, calibration_half, canary_test, canary_verdict
from diffusion.canaries import draw_canaries
from diffusion.data import load_digits_dataset
from diffusion.io import write_json
from diffusion.loading import load_model
from diffusion.reference import load_or_train_reference, train_on_ids
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.training import TrainConfig
from unlearn import METHODS

ATTACK_NAMES = ["loss", "secmi", "pia", "pian", "sima"]
EXACT = ("retrain", "reference")


def trained(folder: Path, dataset, ids, recipe: TrainConfig, role: str):
    """A model trained on ``ids``, saved in ``folder`` (reused when there)."""
    if (folder / "erasediff.json").is_file():
        return load_model(folder)
    result = train_on_ids(dataset, ids, recipe, role=role, quiet=True)
    result.model.save(folder, result.record)
    return result.model


def section(scores: dict[str, np.ndarray], is_deleted: np.ndarray, subset: np.ndarray, config: CanaryAuditConfig,
            seed: int) -> dict:
    """One model's canary section on the canaries ``subset`` under the assignment ``is_deleted``."""
    calibration = calibration_half(subset.size, is_deleted[subset], seed)
    return canary_test({a: s[subset] for a, s in scores.items()}, is_deleted[subset], calibration,
                       dataclasses.replace(config, seed=seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="models go here (reused when present)")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--forget-samples", type=int, default=50)
    parser.add_argument("--assignments", type=int, default=200, help="fresh assignments per exact model")
    parser.add_argument("--subsets", type=int, default=100, help="random subsets per model and M")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("canaries.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = load_digits_dataset()
    plain = make_splits(dataset.labels, 0)
    canaries, sealed = draw_canaries("digits", dataset, plain, args.count, args.seed + 1)
    splits = plain.with_canaries(sealed.included, canaries.ids)
    recipe = TrainConfig()
    timings = {}
    tick = time.perf_counter()
    original = trained(args.work / "original", dataset, splits.members, recipe, "reference")
    timings["train original"] = time.perf_counter() - tick
    rng = np.random.default_rng(args.seed)
    user = rng.choice(plain.members, size=args.forget_samples, replace=False)
    spec = ForgetSpec(sample_ids=tuple(sorted({*user.tolist(), *sealed.included.tolist()})))
    task = ForgetTask.from_spec(dataset, splits, spec)
    models = {"noop": original}
    for name, steps in (("early", max(1, METHODS.make("erasediff").steps // 10)), ("erasediff", None)):
        tick = time.perf_counter()
        method = METHODS.make("erasediff", **({"steps": steps} if steps else {}))
        models[name] = method.unlearn(original, task, seed=args.seed, quiet=True).model
        timings[f"unlearn {name}"] = time.perf_counter() - tick
    tick = time.perf_counter()
    models["retrain"] = trained(args.work / "retrain", dataset, task.retain.ids.numpy(),
                                dataclasses.replace(recipe, seed=987_654), "retrained")
    timings["train retrain"] = time.perf_counter() - tick
    models["reference"], _, _ = load_or_train_reference(dataset, plain, recipe, quiet=True)
    images = dataset.select(canaries.ids)
    tick = time.perf_counter()
    scores = {name: {a: ATTACKS.make(a).score(model, images, seed=args.seed).scores for a in ATTACK_NAMES}
              for name, model in models.items()}
    timings["score every canary"] = time.perf_counter() - tick
    config = CanaryAuditConfig("", "", "", attacks=ATTACK_NAMES, n_permutations=args.permutations, seed=args.seed)
    is_deleted = np.isin(canaries.ids, sealed.included)
    everything = np.arange(canaries.ids.size)
    rows = {}
    print(f"{canaries.ids.size} canaries, {int(is_deleted.sum())} included and deleted with {args.forget_samples} "
          f"member images; alpha {config.alpha}, AUC margin {config.auc_margin}")
    print(f"{'model':10s} {'verdict':13s} {'attack':6s} {'AUC':>6s} {'p':>7s} {'AUC<=':>6s} {'eps>=':>6s}")
    for name in models:
        found = section(scores[name], is_deleted, everything, config, args.seed)
        verdict = canary_verdict({"unlearned": found, "original": section(scores["noop"], is_deleted, everything,
                                                                          config, args.seed)}, config)[0]
        rows[name] = {"verdict": verdict, "unlearned": found}
        print(f"{name:10s} {verdict:13s} {found['chosen_attack']:6s} {found['test_auc']:6.3f} "
              f"{found['p_value']:7.4f} {found['auc_upper_bound']:6.3f} {found['epsilon']['epsilon']:6.2f}")
    deleted_ids, kept_ids = np.flatnonzero(is_deleted), np.flatnonzero(~is_deleted)
    sizes = [m for m in (50, 100, 200) if m <= min(deleted_ids.size, kept_ids.size)]
    fresh = "all, fresh assignments"
    rates: dict = {}
    for name in models:
        rates[name] = {}
        for m in [*sizes, *([fresh] if name in EXACT else [])]:
            outcomes = []
            for draw in range(args.assignments if m == fresh else args.subsets):
                pick = np.random.default_rng([args.seed, draw, 7])
                if m == fresh:  # canaries the model never saw are exchangeable under any assignment
                    subset, assigned = everything, pick.random(canaries.ids.size) < 0.5
                else:
                    subset = np.sort(np.r_[pick.choice(deleted_ids, m, replace=False),
                                           pick.choice(kept_ids, m, replace=False)])
                    assigned = is_deleted
                sections = {"unlearned": section(scores[name], assigned, subset, config, draw),
                            "original": section(scores["noop"], is_deleted, subset, config, draw)}
                outcomes.append(canary_verdict(sections, config)[0])
            rates[name][str(m)] = {v: outcomes.count(v) / len(outcomes) for v in ("PASS", "FAIL", "INCONCLUSIVE")}
            rates[name][str(m)]["runs"] = len(outcomes)
    print("\nverdict rates (PASS / FAIL / INCONCLUSIVE) over random subsets of M deleted + M never-included canaries, "
          "and over fresh assignments on the exact models:")
    for name, per in rates.items():
        for m, r in per.items():
            print(f"  {name:10s} M={m:24s} PASS {r['PASS']:5.0%}  FAIL {r['FAIL']:5.0%}  "
                  f"INCONCLUSIVE {r['INCONCLUSIVE']:5.0%}  ({r['runs']} runs)")
    total = time.perf_counter() - started
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    write_json(args.json, {"argv": vars(args) | {"work": str(args.work), "json": str(args.json)}, "rows": rows,
                           "rates": rates, "timings": timings, "total_seconds": total,
                           "num_canaries": int(canaries.ids.size), "num_deleted": int(is_deleted.sum())})


if __name__ == "__main__":
    main()
