"""Known answers for the audit at full size, over many retrain seeds: does the verdict say what is true?

    python benchmarks/controls.py --forget-classes 0,3,8 --forget-samples 50 --retrains 3,3,2,2 \
        --json benchmarks/results/controls.json --seed-spread audit/seed_spread.json

On the default reference model, for each task (each forget class, and one deletion of random member images), the
default audit (its K references retrained by the audit itself and cached) judges:

  (a) noop       the original presented as unlearned                          must never PASS
  (b) redirect   the original with the erased class's embedding row replaced  must never PASS
                 by another class's (every weight that learned the images kept; classes only)
  (c) early      EraseDiff stopped after 10% of its steps                     must never PASS
  (d) retrain_j  retrained from scratch with seed 987654 + j, a seed no       must never FAIL; PASS >= 90%
                 reference uses (exact unlearning; cached by content)
  (e) erasediff  EraseDiff at its defaults (first task: the default audit)     reported as it comes

The retrains of every task, with the task's K references, are exchangeable draws of "a model retrained without the
forget set": their membership AUCs on the task's fixed images measure the seed spread (written, with provenance,
to ``--seed-spread``: the file the audit ships). To keep that measurement from certifying its own retrains, every
verdict in the table is re-decided from the audit's score tables with a seed spread measured WITHOUT the audited
model (leave one retrain out); the coverage of the nominal intervals over the retrains is reported beside the
images-only (bootstrap) coverage. Prints the table, the pass rate per check, and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from audit.checks import evaluate_checks, verdict
from audit.config import AuditConfig
from audit.generation_checks import generation_values
from audit.membership import membership_from_scores
from audit.run import reference_seed, retrained_model, run_audit
from audit.seed_spread import GENERATION, SeedPriors, mean_statistic
from diffusion.data import load_digits_dataset
from diffusion.io import cache_dir, write_json
from diffusion.model import DiffusionModel
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.training import TrainConfig
from reports.results import verdict_of
from unlearn import METHODS

NEGATIVE = ("noop", "redirect", "early")
CONTROLS = (*NEGATIVE, "retrain", "erasediff")
MUST_NOT = {"noop": "PASS", "redirect": "PASS", "early": "PASS", "retrain": "FAIL"}
OTHER_SEED = 987_654  # the (d) retrains use OTHER_SEED + j: no audit reference uses them (theirs derive from the seed)


def redirected(model: DiffusionModel, classes: tuple[int, ...]) -> DiffusionModel:
    """A copy whose embedding row of each erased class is that of the next retained class: the class is no longer
    generated under its label, yet every weight that learned its images is intact."""
    copy = model.copy()
    table = copy.unet.class_embedding.weight
    retained = [c for c in range(table.shape[0]) if c not in classes]
    with torch.no_grad():
        for c in classes:
            table[c] = table[min(retained, key=lambda r: (r - c) % table.shape[0])]
    return copy


def control_models(original: DiffusionModel, task: ForgetTask, spec: ForgetSpec, data: tuple, folder: Path,
                   seed: int, wanted: tuple[str, ...], retrains: int) -> dict[str, Path]:
    """The folders of the ``wanted`` control models (the noop is the original's own folder, added by the caller):
    early and redirect saved under ``folder``, the retrains in the cache (keyed by content, as references are)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "early" in wanted:
        default_steps = METHODS.make("erasediff").steps
        early = METHODS.make("erasediff", steps=max(1, default_steps // 10)).unlearn(original, task, seed=seed,
                                                                                       quiet=True).model
        early.save(folder / "early", {"role": "control early"})
        paths["early"] = folder / "early"
    if spec.classes and "redirect" in wanted:
        redirected(original, spec.classes).save(folder / "redirect", {"role": "control redirect"})
        paths["redirect"] = folder / "redirect"
    if "retrain" in wanted:
        retrain = METHODS.make("retrain", steps=TrainConfig().steps)
        for j in range(retrains):
            _, source = retrained_model(retrain, original, task, data, OTHER_SEED + j, quiet=True)
            paths[f"retrain_{j}"] = Path(source["source"])
    return paths


def read_scores(folder: Path) -> tuple[dict, np.ndarray]:
    """An audit's ``scores/*.csv`` -> (attack -> conditioning -> role -> (N,) raw scores, is_member (N,))."""
    scores: dict = {}
    is_member = None
    for path in sorted((folder / "scores").glob("*.csv")):
        grouped: dict = defaultdict(lambda: defaultdict(list))
        members: dict = defaultdict(list)
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                grouped[row["conditioning"]][row["model"]].append(float(row["score"]))
                members[row["conditioning"], row["model"]].append(row["is_member"] == "1")
        scores[path.stem] = {c: {role: np.array(v) for role, v in per.items()} for c, per in grouped.items()}
        is_member = np.array(next(iter(members.values())))
    return scores, is_member


def retrain_aucs(results: dict) -> dict[str, dict[str, list[float]]]:
    """conditioning -> statistic -> the raw AUCs of every model retrained without the forget set in one audit (the
    references, and the unlearned model when it is a retrain): attacks by name, and their mean; under ``generation``
    the mean of each generation check's per-image values (:func:`audit.generation_checks.generation_values`)."""
    out: dict = defaultdict(dict)
    for attack, per_conditioning in results["membership"]["attacks"].items():
        for conditioning, comparison in per_conditioning.items():
            raw = comparison["auc"]["raw"]["unlearned"]
            out[conditioning][attack] = [raw["subject_value"], *raw["reference_values"]]
    for per in out.values():
        per[mean_statistic(list(per))] = np.mean(list(per.values()), axis=0).tolist()
    per_role = [generation_values(results, role) for role in ["unlearned", *results["membership"]["references"]]]
    for statistic in per_role[0]:
        if all(statistic in values for values in per_role):
            out[GENERATION][statistic] = [float(np.mean(values[statistic])) for values in per_role]
    return out


def pooled_variances(tasks: list[dict]) -> tuple[dict, int]:
    """Pool the between-retrain variances of several tasks: sum of (n_t - 1) s_t^2 over sum of (n_t - 1)."""
    sums: dict = defaultdict(lambda: defaultdict(float))
    dof = 0
    for values in tasks:
        n = None
        for conditioning, per in values.items():
            for statistic, aucs in per.items():
                n = len(aucs)
                sums[conditioning][statistic] += (n - 1) * float(np.var(aucs, ddof=1))
        dof += (n or 1) - 1
    return {c: {s: v / dof for s, v in per.items()} for c, per in sums.items()}, dof


def task_retrain_aucs(rows: list[dict], task: str, leave_out: str | None = None) -> dict:
    """conditioning -> statistic -> AUCs of the task's retrains (each retrain audit's subject, and the references
    once), without the retrain ``leave_out``."""
    out: dict = defaultdict(lambda: defaultdict(list))
    references_added = False
    for row in rows:
        if row["task"] != task or not row["control"].startswith("retrain_"):
            continue
        for conditioning, per in row["retrain_aucs"].items():
            for statistic, aucs in per.items():
                if row["control"] != leave_out:
                    out[conditioning][statistic].append(aucs[0])
                if not references_added:
                    out[conditioning][statistic].extend(aucs[1:])
        references_added = True
    return out


def priors_from(rows: list[dict], kind: str, leave_out: tuple[str, str] | None = None) -> tuple[SeedPriors, dict]:
    """The pooled seed spread over the tasks of ``kind`` (leaving one retrain out), and its raw measurement."""
    tasks = sorted({r["task"] for r in rows if r["kind"] == kind})
    per_task = [task_retrain_aucs(rows, t, leave_out[1] if leave_out and leave_out[0] == t else None) for t in tasks]
    per_task = [values for values in per_task if values]
    if not per_task:
        return SeedPriors(), {}
    variances, dof = pooled_variances(per_task)
    return SeedPriors(variances, dof, f"controls, {kind} tasks {', '.join(tasks)}"), variances


def with_unmeasured(priors: SeedPriors, audited: SeedPriors) -> SeedPriors:
    """``priors`` plus every conditioning of ``audited`` it lacks, each with its own degrees of freedom and source."""
    missing = set(audited.variances) - set(priors.variances)
    return SeedPriors({**priors.variances, **{c: audited.variances[c] for c in missing}}, priors.dof, priors.source,
                      priors.scale, {**priors.dofs, **{c: audited.dofs.get(c, audited.dof) for c in missing}},
                      {**priors.sources, **{c: audited.sources.get(c, audited.source) for c in missing}},
                      {**priors.scales, **{c: audited.scales[c] for c in missing if c in audited.scales}})


def redecide(results: dict, folder: Path, priors: SeedPriors, margin: float | None = None) -> dict:
    """The audit's checks and verdict again under the current rule (today's default thresholds, so a reused audit
    is decided as a new one would be), membership re-decided from its score tables under ``priors`` (and, given,
    another membership ``margin``). A conditioning the controls do not measure (the retained members' exposure,
    measured on retrains of its own) keeps the spread the audit used."""
    priors = with_unmeasured(priors, SeedPriors.from_dict(results["membership"].get("seed_spread", {})))
    config = AuditConfig(**{k: v for k, v in results["config"].items() if k != "thresholds"})
    config.thresholds = type(config.thresholds)().for_task(bool(results["forget_spec"]["classes"]))
    if margin is not None:
        config.thresholds.mia_auc_margin = margin
    scores, is_member = read_scores(folder)
    references = results["membership"]["references"]
    comparisons, combined, _ = membership_from_scores(scores, is_member, references, config.thresholds,
                                                      config.seed, priors)
    document = {**results, "membership": {**results["membership"], "attacks": comparisons, "combined": combined,
                                          "seed_spread": priors.describe()}}
    checks = evaluate_checks(document, config.thresholds)
    return {"verdict": verdict(checks), "combined": combined,
            "checks": {c.name: {"decision": c.decision, "estimate": c.estimate, "interval": c.interval}
                       for c in checks}}


def run_task(name: str, spec: ForgetSpec, args, dataset, splits, work: Path, rows: list[dict], first: bool) -> None:
    """Every control of one task. On the first task only, (e) runs first, with the built-in reference as the audit
    itself loads it, so for class 0 it is exactly the default audit."""
    task = ForgetTask.from_spec(dataset, splits, spec)
    ids_file = None
    if spec.sample_ids:
        ids_file = work / f"{name}-ids.txt"
        ids_file.write_text(" ".join(map(str, spec.sample_ids)))
    base = dict(forget_classes=list(spec.classes), forget_ids=str(ids_file) if ids_file else None,
                retrain_references=args.references, seed=args.seed, quiet=True, force=True)
    wanted = tuple(args.controls.split(","))
    kind = "class" if spec.classes else "samples"
    audits: dict[str, Path | None] = {}
    if "erasediff" in wanted and first:
        audits["erasediff"] = None
    original, original_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    retrains = args.retrains[name]
    audits |= {"noop": original_dir, **control_models(original, task, spec, (dataset, splits, spec),
                                                        work / name / "models", args.seed, wanted, retrains)}
    for control, model_dir in audits.items():
        if control != "erasediff" and control.split("_")[0] not in wanted:
            continue
        out = work / name / control
        start = time.perf_counter()
        extra = {} if model_dir is None else {"model": str(original_dir), "unlearned": str(model_dir)}
        if args.reuse and (out / "results.json").is_file():  # its own record says how long it took
            results = json.loads((out / "results.json").read_text())
            wall = results["timings"]["total_seconds"]
        else:
            results = run_audit(AuditConfig(**base, **extra, out=str(out)), memo=args.memo).to_json()
            wall = time.perf_counter() - start
        row = {"task": name, "kind": kind, "control": control, "folder": str(out), "wall_seconds": wall,
               "audit_verdict": results["verdict"],
               "audit_checks": {c["name"]: c["decision"] for c in results["checks"]},
               "retrain_aucs": retrain_aucs(results)}
        rows.append(row)
        print(f"{name:10s} {control:10s} audited as shipped: {results['verdict']:12s} {row['wall_seconds']:5.0f}s",
              flush=True)


def coverage(rows: list[dict]) -> dict:
    """Over the retrain audits: how often the nominal interval of (retrain - references) holds 0, seed-aware
    (as decided) and images-only (the paired bootstrap), per conditioning for the mean over attacks."""
    counts: dict = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        if not row["control"].startswith("retrain_"):
            continue
        for conditioning, combined in row["decided"]["combined"].items():
            if "unlearned" not in combined:
                continue
            diff = combined["unlearned"]
            key = f"{row['kind']}/{conditioning}"
            counts[key][0] += diff["low"] <= 0.0 <= diff["high"]
            counts[key][1] += diff["bootstrap_low"] <= 0.0 <= diff["bootstrap_high"]
            counts[key][2] += 1
    return {key: {"seed_aware": a / n, "images_only": b / n, "runs": n} for key, (a, b, n) in counts.items()}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'task':10s} {'control':10s} {'verdict':12s} {'wall s':>6s}  membership per conditioning "
          "(mean difference [interval], vetoes) | other checks")
    for row in rows:
        decided = row["decided"]
        cells = []
        for conditioning, combined in decided["combined"].items():
            if "unlearned" not in combined:
                cells.append(f"{conditioning}:{combined['decision'][0]}")
                continue
            d = combined["unlearned"]
            veto = f" veto {','.join(combined['vetoes'])}" if combined["vetoes"] else ""
            cells.append(f"{conditioning}:{combined['decision'][0]}[{d['low']:+.2f},{d['high']:+.2f}]{veto}")
        others = " ".join(f"{k}:{v['decision'][0]}" for k, v in decided["checks"].items()
                          if not k.startswith("membership"))
        bad = " <-- WRONG" if MUST_NOT.get(row["control"].split("_")[0]) == decided["verdict"] else ""
        print(f"{row['task']:10s} {row['control']:10s} {decided['verdict']:12s} {row['wall_seconds']:6.0f}  "
              f"{' '.join(cells)} | {others}{bad}", flush=True)


def margin_sensitivity(rows: list[dict], margins: list[float]) -> dict:
    """Verdicts per (kind of task, control) re-decided at each membership margin (leave-one-out seed spread):
    the known answers that choose a margin, never EraseDiff's verdict."""
    table: dict = {}
    print("\nverdicts by membership margin (PASS / FAIL / INCONCLUSIVE), leave-one-out seed spread:")
    for margin in margins:
        counts: dict = defaultdict(lambda: {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0})
        for row in rows:
            leave_out = (row["task"], row["control"]) if row["control"].startswith("retrain_") else None
            priors, _ = priors_from(rows, row["kind"], leave_out)
            results = json.loads((Path(row["folder"]) / "results.json").read_text())
            decided = redecide(results, Path(row["folder"]), priors, margin)
            counts[f"{row['kind']}/{row['control'].split('_')[0]}"][decided["verdict"]] += 1
            counts[f"{row['kind']}/{row['control'].split('_')[0]} membership"][
                verdict_of_membership(decided)] += 1
        table[str(margin)] = dict(counts)
        print(f"  margin {margin:g}: " + "  ".join(f"{k} {v['PASS']}/{v['FAIL']}/{v['INCONCLUSIVE']}"
                                                 for k, v in sorted(counts.items())))
    return table


def verdict_of_membership(decided: dict) -> str:
    """The verdict of the membership checks alone (every conditioning and the power check)."""
    return verdict_of([c["decision"] for name, c in decided["checks"].items()
                       if name.startswith(("membership", "audit_power"))])


def pass_rates(rows: list[dict]) -> dict:
    """Per control kind: runs, verdicts, and the PASS rate of every check."""
    table: dict = {}
    for control in sorted({r["control"].split("_")[0] for r in rows}):
        chosen = [r for r in rows if r["control"].split("_")[0] == control]
        names = sorted({k for r in chosen for k in r["decided"]["checks"]})
        table[control] = {
            "runs": len(chosen),
            "verdicts": {v: sum(r["decided"]["verdict"] == v for r in chosen)
                         for v in ("PASS", "FAIL", "INCONCLUSIVE")},
            "check_pass_rate": {k: float(np.mean([r["decided"]["checks"][k]["decision"] == "PASS"
                                                  for r in chosen if k in r["decided"]["checks"]])) for k in names},
        }
    return table


def seed_spread_document(rows: list[dict], original: DiffusionModel, args) -> dict:
    """The measurement the audit ships (audit/seed_spread.json): per kind of task, the pooled variances."""
    tasks = []
    for kind in ("class", "samples"):
        priors, variances = priors_from(rows, kind)
        if not variances:
            continue
        names = sorted({r["task"] for r in rows if r["kind"] == kind})
        num_forget = [json.loads((Path(r["folder"]) / "results.json").read_text())["membership"]["num_forget"]
                      for r in rows if r["kind"] == kind][:1]
        retrains = sum(len(next(iter(next(iter(task_retrain_aucs(rows, t).values())).values()))) for t in names)
        tasks.append({"kind": kind, "original_fingerprint": original.fingerprint(), "num_forget": num_forget[0],
                      "num_retrains": retrains, "dof": priors.dof, "variances": variances,
                      "description": f"{kind} task(s) {', '.join(names)}, K = {args.references} references + the "
                                     "controls' retrains, raw AUC variance between retrains on fixed images"})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"provenance": {"date": datetime.now(UTC).date().isoformat(), "commit": commit,
                           "command": "python benchmarks/controls.py " + " ".join(args.argv)},
            "tasks": tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-classes", default="0,3,8", help="comma-separated classes, one task each")
    parser.add_argument("--forget-samples", type=int, default=50, help="member images of a sample deletion (0: none)")
    parser.add_argument("--references", type=int, default=AuditConfig().retrain_references)
    parser.add_argument("--retrains", default="3", help="exact retrains per task: one number, or one per task in the "
                        "order they run (the first class, the sample deletion, the other classes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margins", default="0.1,0.15,0.2",
                        help="membership margins to re-decide every audit at (the known answers choose one)")
    parser.add_argument("--controls", default=",".join(CONTROLS),
                        help=f"comma-separated subset of {','.join(CONTROLS)} (default: all)")
    parser.add_argument("--work", type=Path, default=None, help="where models and audits go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=Path("controls.json"))
    parser.add_argument("--reuse", action="store_true", help="take audits already finished in --work as they are")
    parser.add_argument("--seed-spread", type=Path, default=None,
                        help="write the measured seed spread here (the audit ships audit/seed_spread.json)")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.memo = {}  # the original's and the references' generation results, computed once per task
    args.margins = [float(m) for m in args.margins.split(",")]
    unknown = sorted(set(args.controls.split(",")) - set(CONTROLS))
    if unknown:
        parser.error(f"--controls: unknown {', '.join(unknown)}; expected a subset of {','.join(CONTROLS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="erasediff-controls-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, 0)
    print(f"cache: {cache_dir()}  work: {work}", flush=True)
    tasks = [(f"class{c}", ForgetSpec(classes=(int(c),))) for c in args.forget_classes.split(",") if c.strip()]
    if args.forget_samples:  # second, after the default audit's class: the kind of task that pairs best
        rng = np.random.default_rng(args.seed)
        ids = rng.choice(splits.members, size=args.forget_samples, replace=False)
        tasks.insert(1, (f"samples{args.forget_samples}", ForgetSpec(sample_ids=tuple(int(i) for i in ids))))
    counts = [int(n) for n in args.retrains.split(",")]
    if len(counts) not in (1, len(tasks)):
        parser.error(f"--retrains: give one number or {len(tasks)} (one per task); got {args.retrains}")
    args.retrains = {name: counts[min(i, len(counts) - 1)] for i, (name, _) in enumerate(tasks)}
    assert all(reference_seed(args.seed, k) != OTHER_SEED + j for k in range(args.references)
               for j in range(max(counts)))
    rows: list[dict] = []
    started = time.perf_counter()
    for i, (name, spec) in enumerate(tasks):
        run_task(name, spec, args, dataset, splits, work, rows, first=i == 0)
        write_json(args.json, {"rows": rows, "total_seconds": time.perf_counter() - started})
    for row in rows:  # every verdict re-decided with a seed spread that never saw the audited retrain
        leave_out = (row["task"], row["control"]) if row["control"].startswith("retrain_") else None
        priors, _ = priors_from(rows, row["kind"], leave_out)
        results = json.loads((Path(row["folder"]) / "results.json").read_text())
        row["decided"] = redecide(results, Path(row["folder"]), priors)
    print_table(rows)
    summary = {"rows": rows, "pass_rates": pass_rates(rows), "coverage": coverage(rows),
               "margins": margin_sensitivity(rows, args.margins), "total_seconds": time.perf_counter() - started}
    wrong = [r for r in rows if MUST_NOT.get(r["control"].split("_")[0]) == r["decided"]["verdict"]]
    print("\nper control: runs, verdicts, PASS rate of each check")
    for control, rates in summary["pass_rates"].items():
        print(f"  {control:10s} {rates['runs']:2d} runs  {rates['verdicts']}  "
              + " ".join(f"{k}:{v:.0%}" for k, v in rates["check_pass_rate"].items()))
    print("coverage of the nominal interval over the retrains (mean over attacks):")
    for key, c in summary["coverage"].items():
        print(f"  {key:18s} seed-aware {c['seed_aware']:.0%}  images only {c['images_only']:.0%}  ({c['runs']} runs)")
    print(f"{len(rows)} audits in {summary['total_seconds']:.0f} s; known answers wrong: {len(wrong)}")
    write_json(args.json, summary)
    if args.seed_spread:
        original, _, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
        write_json(args.seed_spread, seed_spread_document(rows, original, args))


if __name__ == "__main__":
    main()
