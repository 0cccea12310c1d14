"""Known answers for the audit of a FINE-TUNED model, at full size: its references are the base fine-tuned again.

    python benchmarks/fine_tune.py --work erasediff-out/fine-tune --json benchmarks/results/fine_tune.json

The base is the built-in class model (the bundled digits, from the cache). It is fine-tuned with
``erasediff train --base`` on a second image set made here: every digit drawn in another style (strokes dilated,
a 2x2 grey dilation), a quarter of them as the fine-tuning members. Two deletion requests hit the fine-tune:

  files    20 fine-tuning images, named by file (``--forget-files``)
  concept  one class of the fine-tuning data (the bold "3"s; the base still knows thin ones)

Each is audited with K references, the base fine-tuned again without the forget set with the fine-tune's recipe
(recorded in the fine-tuned model, so the audit finds it), and these candidates as "unlearned":

  erasediff      EraseDiff at its defaults, run by the audit                    reported as it comes
  noop           the fine-tuned model itself                                    must never PASS
  refinetune_j   the base fine-tuned again without the forget set, seed         must never FAIL
                 987654 + j (no reference uses it): exact unlearning

Every audit is also decided WITHOUT references, from its own score tables (no model work): membership against
chance, as ``erasediff audit --references 0`` decides it, so the same known answers measure that mode too.
Prints the table (verdict, the checks that did not PASS, the no-reference membership decisions, wall times of
each part) and writes JSON. ``--reuse`` takes the audits already finished in ``--work`` as they are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from controls import read_scores  # benchmarks/controls.py: an audit's score tables
from PIL import Image
from scipy.ndimage import grey_dilation

from audit.config import AuditConfig, Thresholds
from audit.membership import membership_from_scores
from audit.run import original_record, prepare_subjects, reference_method, reference_seed, retrained_model, run_audit
from audit.seed_spread import SeedPriors
from diffusion.data import load_digits_dataset, load_image_folder
from diffusion.io import write_json
from diffusion.reference import load_or_train_reference
from diffusion.splits import make_splits
from diffusion.training import TrainConfig

OTHER_SEED = 987_654  # the exact candidates' seeds: OTHER_SEED + j, never a reference's
MUST_NOT = {"noop": "PASS", "refinetune": "FAIL"}


def write_bold_digits(folder: Path) -> None:
    """Every bundled digit, strokes dilated (2x2 grey dilation), as ``folder/<digit>/<id>.png`` (8x8 grey)."""
    digits = load_digits_dataset()
    for i, (image, label) in enumerate(zip(digits.images, digits.labels.tolist())):
        pixels = ((image[0].numpy() + 1) * 127.5).round().astype(np.uint8)
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey_dilation(pixels, size=(2, 2))).save(folder / str(label) / f"{i:04d}.png")


def timed(step: str, timings: dict, command: list[str]) -> None:
    """Run an ``erasediff`` command line in a fresh process; its wall time under ``step``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "erasediff", *command], check=True)
    timings[step] = time.perf_counter() - start
    print(f"{step}: {timings[step]:.0f} s", flush=True)


def exact_candidates(config: AuditConfig, count: int) -> dict[str, Path]:
    """For the audit ``config`` (a given unlearned model, its references in the cache): ``count`` models of the base
    fine-tuned again without the forget set, with seeds no reference uses (cached by content, like the references)."""
    subjects = prepare_subjects(config)
    method, _ = reference_method(config, subjects.models["original"], original_record(config), TrainConfig())
    assert all(reference_seed(config.seed, k) != OTHER_SEED + j for k in range(config.retrain_references)
               for j in range(count))
    data = (subjects.dataset, subjects.splits, subjects.spec)
    paths = {}
    for j in range(count):
        _, source = retrained_model(method, subjects.models["original"], subjects.task, data, OTHER_SEED + j, True)
        paths[f"refinetune_{j}"] = Path(source["source"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="where the data, models and audits go")
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps [1000]")
    parser.add_argument("--forget-files", type=int, default=20, help="fine-tuning images deleted by file [20]")
    parser.add_argument("--concept", type=int, default=3, help="the fine-tuning class erased as a concept [3]")
    parser.add_argument("--exact", type=int, default=3, help="exact candidates (re-fine-tunes) per task [3]")
    parser.add_argument("--references", type=int, default=AuditConfig().retrain_references)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the fine-tuning data's member split [0: the base's own split of the same "
                             "digits, so every fine-tuning member's plain twin was a base member]")
    parser.add_argument("--json", type=Path, default=Path("fine_tune.json"))
    parser.add_argument("--reuse", action="store_true", help="take audits already finished in --work as they are")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if args.reuse and args.json.is_file():  # the training times of the run that made the reused models
        timings = json.loads(args.json.read_text())["timings"]
    bold = work / "bold"
    if not bold.is_dir():
        write_bold_digits(bold)
    digits = load_digits_dataset()
    _, base, _ = load_or_train_reference(digits, make_splits(digits.labels, 0), TrainConfig(), quiet=True)
    tuned = work / "tuned"
    if not tuned.is_dir():
        timed("fine-tune", timings, ["train", "--base", str(base), "--data", str(bold), "--steps", str(args.steps),
                                     "--split-seed", str(args.split_seed), "--out", str(tuned), "--quiet"])
    data = load_image_folder(bold, size=8)
    splits = make_splits(data.labels, args.split_seed)
    chosen = np.random.default_rng(args.seed).choice(splits.members, size=args.forget_files, replace=False)
    forget = work / "forget.txt"
    forget.write_text("\n".join(data.files[i] for i in sorted(chosen)) + "\n")
    tasks = {"files": {"forget_files": str(forget), "forget_classes": []},
             "concept": {"forget_classes": [args.concept]}}
    rows, memo = [], {}
    for task, request in tasks.items():
        common = dict(model=str(tuned), data=str(bold), split_seed=args.split_seed,
                      retrain_references=args.references, seed=args.seed, quiet=True, force=True, **request)

        reuse = args.reuse
        audit_candidate(task, "erasediff", None, common, work, memo, rows, reuse)  # first: it trains the references
        noop = audit_candidate(task, "noop", tuned, common, work, memo, rows, reuse)
        start = time.perf_counter()
        exact = exact_candidates(noop, args.exact)
        if not reuse:
            timings[f"{task}: {args.exact} exact candidates trained"] = time.perf_counter() - start
        for control, path in exact.items():
            audit_candidate(task, control, path, common, work, memo, rows, reuse)
    print_table(rows, timings)
    violations = [r for r in rows if MUST_NOT.get(r["control"].split("_")[0]) == r["verdict"]]
    alone = [r for r in rows for x in r["without_references"].values()
             if MUST_NOT.get(r["control"].split("_")[0]) == x["decision"]]
    twins = np.array([int(Path(name).stem) for name in data.files])  # each bold image's plain digit
    overlap = float(np.isin(twins[splits.members], make_splits(digits.labels, 0).members).mean())
    print(f"fine-tuning members whose plain twin the base trained on: {overlap:.0%}")
    write_json(args.json, {"created": datetime.now(UTC).isoformat(), "argv": sys.argv[1:], "base": str(base),
                           "members_with_twin_in_base": overlap,
                           "fine_tuned": str(tuned), "timings": timings, "rows": rows,
                           "known_answers_violated": len(violations),
                           "membership_without_references_violated": len(alone)})
    known = sum(r["control"] != "erasediff" for r in rows)
    print(f"known answers violated: {len(violations)} of {known} audits; membership without references: "
          f"{len(alone)} of {sum(len(r['without_references']) for r in rows if r['control'] != 'erasediff')} "
          "decisions")


def audit_candidate(task: str, control: str, unlearned: Path | None, common: dict, work: Path, memo: dict,
                    rows: list[dict], reuse: bool) -> AuditConfig:
    """Audit ``unlearned`` (None: EraseDiff run by the audit) for ``task``; its row appended to ``rows``."""
    out = work / task / control
    config = AuditConfig(**common, unlearned=None if unlearned is None else str(unlearned), out=str(out))
    if reuse and (out / "results.json").is_file():  # its own record says how long it took
        results = json.loads((out / "results.json").read_text())
        seconds = results["timings"]["total_seconds"]
    else:
        start = time.perf_counter()
        results = run_audit(config, memo=memo).to_json()
        seconds = time.perf_counter() - start
    rows.append(row_of(task, control, results, seconds, out))
    return config


def without_references(results: dict, folder: Path) -> dict:
    """The audit's membership decided again from its score tables with no reference (against chance), under each
    conditioning: decision, estimate (AUC - 0.5), interval, and the original's power."""
    scores, is_member = read_scores(folder)
    scores = {attack: {c: {role: v for role, v in per.items() if not role.startswith("reference")}
                       for c, per in per_c.items()} for attack, per_c in scores.items()}
    thresholds = Thresholds().for_task(bool(results["forget_spec"]["classes"]))
    priors = SeedPriors.from_dict(results["membership"]["seed_spread"])
    _, combined, _ = membership_from_scores(scores, is_member, [], thresholds, results["config"]["seed"], priors)
    return {c: {"decision": x["decision"], "estimate": x["unlearned"]["estimate"],
                "interval": [x["unlearned"]["low"], x["unlearned"]["high"]], "power": x["power"]}
            for c, x in combined.items()}


def row_of(task: str, control: str, results: dict, seconds: float, folder: Path) -> dict:
    row = {"task": task, "control": control, "verdict": results["verdict"], "wall_seconds": seconds,
           "checks": {c["name"]: {"decision": c["decision"], "estimate": c["estimate"], "interval": c["interval"],
                                  "detail": c["detail"]} for c in results["checks"]},
           "timings": results["timings"],
           "references": {role: results["models"][role].get("how") for role in results["membership"]["references"]},
           "without_references": without_references(results, folder)}
    print(f"{task:8s} {control:13s} {row['verdict']:12s} {seconds:5.0f} s", flush=True)
    return row


def print_table(rows: list[dict], timings: dict) -> None:
    print(f"\n{'task':8s} {'control':13s} {'verdict':12s} {'wall s':>6s}  checks not PASSed | membership without "
          "references (AUC - 0.5 [interval])")
    for row in rows:
        others = ", ".join(f"{name}:{c['decision'][0]}" for name, c in row["checks"].items() if c["decision"] != "PASS")
        alone = ", ".join(f"{c}:{x['decision'][0]} {x['estimate']:+.3f} [{x['interval'][0]:+.3f}, "
                          f"{x['interval'][1]:+.3f}]" for c, x in row["without_references"].items())
        print(f"{row['task']:8s} {row['control']:13s} {row['verdict']:12s} {row['wall_seconds']:6.0f}  {others} | "
              f"{alone}")
    print("\n" + "\n".join(f"{step}: {seconds:.0f} s" for step, seconds in timings.items()))
    print("references: " + json.dumps(rows[0]["references"]))


if __name__ == "__main__":
    main()
