"""Every unlearning method on the same reference model and forget set, side by side, in one run.

    python benchmarks/unlearning.py --forget-class 0 --json unlearning.json [--methods erasediff,salun]
    python benchmarks/unlearning.py --forget-samples 20 --methods erasediff,finetune,retrain   # 20-image deletion
    python benchmarks/unlearning.py --forget-concept three --methods erasediff,esd_x,esd_u,retrain   # text model
    python benchmarks/unlearning.py --forget-concept three --methods esd_u --param esd_u.lr=1e-5   # one setting

Class mode: each method runs to its own default budget; every ``--probe-every`` steps the forgotten class is
sampled (the same noise as the final evaluation) and judged, with the timer paused, to find the time at which
its judge accuracy first drops to <= 10%. The table gives steps, wall seconds, milliseconds per step (set-up
such as a saliency mask or Fisher matrix included), the step and second at which 10% was first reached,
forgotten accuracy and entropy, retained accuracy, retained Frechet distance, and wall time and time-to-10%
as ratios to EraseDiff's (for a method that never gets there, its whole run over EraseDiff's time-to-10%: a
lower bound, shown as ">x").
Text mode (``--forget-concept``): class mode on the built-in text-to-image model (trained once and cached), the
concept's digit judged on samples from held-out paraphrase prompts; rows add the largest accuracy drop of a retained
digit and the retained FD as a ratio to the original's. Then the resurrection table: for the original and every
method's model, the judged accuracy on the digit from every caption wording not given to the erasure (all, and the
best one), from a word fitted by concept inversion and from an adversarial prompt (attacks/), the last two fitted on
held-out images of the digit.
Sample mode: forget member images of mixed classes; report retained accuracy and the mean denoising loss of
the forget images next to heldout images of the same classes (fixed noise per sample id), before and after.

Certify mode (``--certify``, a class or ``--forget-samples``): time to a certified erasure. Each method is probed,
timer paused, at steps 25, 50, 100, 200, ... and at its last step with the default audit's membership, forgetting
and utility checks (audit/probe.py: the same references, fitted attacks, conditionings and margins; the original's
and the references' share computed once). A method is "certified" at the first probe where every membership check
and the forgetting check PASS, "unrefuted" at the first where none of them FAILs (what a retrain gets when the audit
lacks the power to certify it), and "clean" at the first where no probed check FAILs, utility included. Seconds are
given as ratios to the retrain row's wall time; the old time to <= 10% judged stays beside them (class mode). The
doubling schedule resolves a time to within 2x. Each probe also records the internal AUC: the loss attack's AUC of
the forget images against the task's non-members (the audit's calibration images, never scored by it), the signal a
stopping rule could watch.
Timings on a shared CPU are noisy; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attacks.adversarial_prompt import adversarial_prompt_attack
from attacks.concept_inversion import concept_inversion
from attacks.prompt_regeneration import prompt_regeneration
from audit.probe import AuditProbe, default_audit_config
from diffusion.concepts import concept_spec, unused_wordings
from diffusion.data import load_digits_dataset
from diffusion.errors import UsageError
from diffusion.io import write_json
from diffusion.judge import load_or_train_judge
from diffusion.quality import evaluate_generation, generate_per_class, judged_correct
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.text_model import captioned
from diffusion.training import TrainConfig
from erasediff.cli.unlearn import parse_params
from unlearn import METHODS
from unlearn.stopping import denoising_losses, internal_membership_auc

FORGOTTEN_BAR = 0.10  # "forgotten": the judge recognises at most this share of the forgotten-class samples
GOALS = ("certified", "unrefuted", "clean")  # see the module docstring


def forgetting_probe(current, classes, judge, dataset, seed: int, step: int, seconds: float) -> dict:
    """Judged accuracy of 50 samples per forgotten class (the same noise at every probe), at ``step``."""
    images, labels = generate_per_class(current, classes, 50, seed=seed, wordings=dataset.class_wordings)
    accuracy = judged_correct(judge.probabilities(images), labels).mean().item()
    return {"step": step, "seconds": seconds, "forgotten_accuracy": accuracy}


def time_to_forgotten(probes: list[dict]) -> dict:
    """The step and second of the first forgetting probe at or below :data:`FORGOTTEN_BAR` (None: never)."""
    reached = next((p for p in probes if p["forgotten_accuracy"] <= FORGOTTEN_BAR), None)
    return {"seconds_to_10pct": reached["seconds"] if reached else None,
            "steps_to_10pct": reached["step"] if reached else None}


def chosen_methods(args, task: ForgetTask, model) -> list[str]:
    """``--methods``, or every registered method that takes ``task`` on ``model`` with its default parameters."""
    def serves(name: str) -> bool:
        try:
            METHODS.make(name, **args.params.get(name, {})).check(task, model)
        except UsageError:
            return False
        return True

    return args.methods or [name for name in METHODS if serves(name)]


def resurrection_probes(args, dataset, splits, spec, model, judge):
    """A function of a text model giving what each resurrection attack on the erased digit brings back (judged
    accuracy): wordings the erasure never used, concept inversion and adversarial prompts, the last two fitted on
    held-out images of the digit (never trained on)."""
    digit = spec.classes[0]
    forget_pixels = dataset.select(spec.forget_ids(dataset.labels, splits))
    fit_images = captioned(dataset.select(spec.heldout_ids(dataset.labels, splits)), model, dataset, args.seed)

    def probe(current) -> dict:
        regenerated = prompt_regeneration(current, judge, unused_wordings(spec, dataset), digit, forget_pixels,
                                          seed=args.seed)
        inverted = concept_inversion(current, judge, fit_images, digit, forget_pixels, seed=args.seed)
        adversarial = adversarial_prompt_attack(current, judge, fit_images, spec.concept[0], digit, forget_pixels,
                                                seed=args.seed)
        return {"paraphrases": regenerated.to_dict(), "concept_inversion": inverted.to_dict(),
                "adversarial_prompt": adversarial.to_dict()}

    return probe


def print_resurrection_table(rows: list[dict]) -> None:
    print(f"\n{'model':18} {'paraphrases (all)':>17} {'best paraphrase':>32} {'inversion':>9} "
          f"{'adversarial':>11}  adversarial prompt")
    for r in rows:
        found = r["resurrection"]
        para, inv, adv = found["paraphrases"], found["concept_inversion"], found["adversarial_prompt"]
        best = f"{para['best_prompt_accuracy']:.2f} '{para['best_prompt']}'"
        print(f"{r['method']:18} {para['judge_accuracy']:17.3f} {best:>32} {inv['judge_accuracy']:9.3f} "
              f"{adv['judge_accuracy']:11.3f}  '{adv['prompt']}'")


def run_class_mode(args, dataset, splits, model, judge) -> list[dict]:
    if args.forget_concept:
        spec = concept_spec(args.forget_concept, dataset.class_wordings, args.anchor)
    else:
        spec = ForgetSpec(classes=tuple(args.forget_class))
    task = model.forget_task(dataset, splits, spec, args.seed)
    resurrect = resurrection_probes(args, dataset, splits, spec, model, judge) if args.forget_concept else None
    original = evaluate_generation(model, judge, dataset, forget_classes=spec.classes, seed=args.seed,
                                   per_class=args.per_class)
    rows = [{"method": "original", "steps": 0, "seconds": 0.0, "seconds_to_10pct": None, "steps_to_10pct": None,
             **{k: original[k] for k in ("forgotten_accuracy", "forgotten_entropy", "retained_accuracy",
                                         "retained_fd")}, "per_class_accuracy": original["per_class_accuracy"]}]
    if resurrect is not None:
        rows[0]["resurrection"] = resurrect(model)
    for name in chosen_methods(args, task, model):
        probes = []

        def probe(step, current, seconds, probes=probes):
            probes.append(forgetting_probe(current, spec.classes, judge, dataset, args.seed, step, seconds))

        result = METHODS.make(name, **args.params.get(name, {})).unlearn(
            model, task, seed=args.seed, quiet=args.quiet, callback=probe, callback_every=args.probe_every)
        metrics = evaluate_generation(result.model, judge, dataset, forget_classes=spec.classes, seed=args.seed,
                                      per_class=args.per_class)
        rows.append({
            "method": name, "steps": result.steps, "seconds": result.seconds, **time_to_forgotten(probes),
            **{k: metrics[k] for k in ("forgotten_accuracy", "forgotten_entropy", "retained_accuracy",
                                       "retained_fd")},
            "per_class_accuracy": metrics["per_class_accuracy"], "probes": probes, "params": result.params,
            "retained_max_drop": max(original["per_class_accuracy"][c] - metrics["per_class_accuracy"][c]
                                     for c in task.retained_classes),
            "fd_ratio_to_original": metrics["retained_fd"] / original["retained_fd"],
        })
        if resurrect is not None:
            rows[-1]["resurrection"] = resurrect(result.model)
        print(f"{name}: done in {result.seconds:.1f} s", flush=True)
    return rows


def run_sample_mode(args, dataset, splits, model, judge) -> list[dict]:
    generator = np.random.default_rng(args.seed)
    ids = tuple(sorted(generator.choice(splits.members, size=args.forget_samples, replace=False).tolist()))
    spec = ForgetSpec(sample_ids=ids)
    task = ForgetTask.from_spec(dataset, splits, spec)
    heldout = dataset.select(spec.heldout_ids(dataset.labels, splits))
    retain = task.retain.take(slice(0, 200))

    def losses(current):
        return {f"loss_{part}": float(denoising_losses(current, d, args.seed).mean())
                for part, d in (("forget", task.forget), ("heldout", heldout), ("retain", retain))}

    original = evaluate_generation(model, judge, dataset, seed=args.seed, per_class=args.per_class)
    rows = [{"method": "original", "steps": 0, "seconds": 0.0, "retained_accuracy": original["retained_accuracy"],
             "retained_fd": original["retained_fd"], **losses(model)}]
    for name in chosen_methods(args, task, model):
        result = METHODS.make(name, **args.params.get(name, {})).unlearn(model, task, seed=args.seed,
                                                                      quiet=args.quiet)
        metrics = evaluate_generation(result.model, judge, dataset, seed=args.seed, per_class=args.per_class)
        rows.append({"method": name, "steps": result.steps, "seconds": result.seconds,
                     "retained_accuracy": metrics["retained_accuracy"], "retained_fd": metrics["retained_fd"],
                     **losses(result.model), "params": result.params})
        print(f"{name}: done in {result.seconds:.1f} s", flush=True)
    return rows


def certify_schedule(steps: int) -> set[int]:
    """The steps at which a run of ``steps`` steps is audited: 25, 50, 100, ... below ``steps``, and ``steps``."""
    schedule, step = {steps}, 25
    while step < steps:
        schedule.add(step)
        step *= 2
    return schedule


def run_certify_mode(args, dataset, splits, model, judge) -> list[dict]:
    config = default_audit_config(args.forget_class[0], args.forget_samples, args.seed,
                                  Path(tempfile.mkdtemp(prefix="erasediff-certify-")))
    probe = AuditProbe(config)
    task, classes = probe.subjects.task, probe.subjects.spec.classes
    model = probe.fixed["original"]

    def audited(step, current, seconds) -> dict:
        start = time.perf_counter()
        result = probe(current)
        return {"step": step, "seconds": seconds, "probe_seconds": time.perf_counter() - start,
                "internal_auc": internal_membership_auc(current, task.forget, task.nonmembers, args.seed),
                "certified": result.certified, "unrefuted": result.unrefuted, "clean": result.clean,
                "decisions": result.decisions(), "membership": result.membership(),
                **{k: result.utility.get(k) for k in ("forgotten_accuracy", "retained_accuracy", "retained_fd")}}

    rows = [{"method": "original", "steps": 0, "seconds": 0.0, "steps_to_10pct": None, "seconds_to_10pct": None,
             "probes": [audited(0, model, 0.0)]}]
    for name in chosen_methods(args, task, model):
        method = METHODS.make(name, **args.params.get(name, {}))
        schedule = certify_schedule(method.get_params()["steps"])
        probes, forgetting = [], []

        def callback(step, current, seconds, probes=probes, forgetting=forgetting, schedule=schedule, name=name):
            if classes and step % args.probe_every == 0:
                forgetting.append(forgetting_probe(current, classes, judge, dataset, args.seed, step, seconds))
            if step in schedule:
                probes.append(audited(step, current, seconds))
                print(f"  {name} step {step}: {seconds:.1f} s, internal AUC {probes[-1]['internal_auc']:.3f}, "
                      f"{' '.join(f'{k}:{v[0]}' for k, v in probes[-1]['decisions'].items())}", flush=True)

        result = method.unlearn(model, task, seed=args.seed, quiet=args.quiet, callback=callback,
                                callback_every=math.gcd(args.probe_every, 25))
        rows.append({"method": name, "steps": result.steps, "seconds": result.seconds, "params": result.params,
                     **time_to_forgotten(forgetting), "probes": probes, "forgetting_probes": forgetting})
        print(f"{name}: done in {result.seconds:.1f} s", flush=True)
    retrain = next((r for r in rows if r["method"] == "retrain"), None)
    for r in rows:
        for goal in GOALS:
            first = next((p for p in r["probes"] if p[goal]), None)
            r[f"steps_to_{goal}"] = first and first["step"]
            r[f"seconds_to_{goal}"] = first and first["seconds"]
            r[f"{goal}_ratio_to_retrain"] = ratio(first and first["seconds"], retrain and retrain["seconds"])
    return rows


def print_certify_table(rows: list[dict]) -> None:
    def cell(r, goal):
        if r[f"steps_to_{goal}"] is None:
            return f"{'never':>6} {'':>6} {'':>5}"
        x = r[f"{goal}_ratio_to_retrain"]
        return f"{r[f'steps_to_{goal}']:6d} {r[f'seconds_to_{goal}']:6.1f} {'-' if x is None else f'{x:.2f}':>5}"

    heads = " | ".join(f"{goal:^19}" for goal in GOALS)
    units = " | ".join(f"{'step':>6} {'s':>6} {'x RT':>5}" for _ in GOALS)
    print(f"{'method':18} {'steps':>6} {'wall s':>7} | {heads} | {'<= 10%':^13} | "
          f"final probe: checks (P/F/I), forgotten acc, retained acc, FD")
    print(f"{'':18} {'':>6} {'':>7} | {units} | {'step':>6} {'s':>6} |")
    for r in rows:
        last = r["probes"][-1]
        to_10 = (f"{'-':>6} {'-':>6}" if r["steps_to_10pct"] is None and not r["steps"] else
                 f"{'never':>6} {'':>6}" if r["steps_to_10pct"] is None else
                 f"{r['steps_to_10pct']:6d} {r['seconds_to_10pct']:6.1f}")
        checks = " ".join(f"{k.removeprefix('membership[').rstrip(']')}:{v[0]}" for k, v in last["decisions"].items())
        forgotten = last["forgotten_accuracy"]
        print(f"{r['method']:18} {r['steps']:6d} {r['seconds']:7.1f} | "
              f"{' | '.join(cell(r, goal) for goal in GOALS)} | {to_10} | {checks}  "
              f"{'-' if forgotten is None else f'{forgotten:.2f}'} {last['retained_accuracy']:.3f} "
              f"{last['retained_fd']:.2f}")


def ratio(value, reference):
    return None if value is None or not reference else value / reference


def add_speed_columns(rows: list[dict]) -> None:
    """Add to each class-mode row its ms per step and its wall time and time-to-10% as ratios to EraseDiff's."""
    base = next((r for r in rows if r["method"] == "erasediff"), None)
    for r in rows:
        r["wall_ratio_to_erasediff"] = ratio(r["seconds"], base and base["seconds"]) if r["steps"] else None
        r["to_10pct_ratio_to_erasediff"] = ratio(r["seconds_to_10pct"], base and base["seconds_to_10pct"])
        # a method that never reached the bar took longer than its whole run: its ratio is at least this
        never = r["steps"] and r["seconds_to_10pct"] is None
        r["to_10pct_ratio_lower_bound"] = ratio(r["seconds"], base and base["seconds_to_10pct"]) if never else None
        r["ms_per_step"] = 1000 * r["seconds"] / r["steps"] if r["steps"] else None


def print_table(rows: list[dict], sample_mode: bool) -> None:
    def fmt(value, spec):
        """``value`` in ``spec``; a missing value as "-" padded to the spec's width."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return format("-", ">" + spec.split(".")[0].rstrip("df"))
        return format(value, spec)

    if sample_mode:
        print(f"{'method':18} {'steps':>6} {'wall s':>7} {'ret acc':>7} {'ret FD':>7} "
              f"{'L forget':>8} {'L heldout':>9} {'L retain':>8}")
        for r in rows:
            print(f"{r['method']:18} {r['steps']:6d} {r['seconds']:7.1f} {r['retained_accuracy']:7.3f} "
                  f"{r['retained_fd']:7.2f} {r['loss_forget']:8.4f} {r['loss_heldout']:9.4f} {r['loss_retain']:8.4f}")
        return
    print(f"{'method':18} {'steps':>6} {'wall s':>7} {'ms/step':>7} {'x ED':>6} {'steps to':>8} {'s to':>6} "
          f"{'x ED':>6} {'fgt acc':>7} {'entropy':>7} {'ret acc':>7} {'ret FD':>7}")
    print(f"{'':18} {'':>6} {'':>7} {'':>7} {'':>6} {'<=10%':>8} {'<=10%':>6}")
    for r in rows:
        never = r["steps"] and r["seconds_to_10pct"] is None
        to_10 = (f"{'never':>8} {'never':>6} {'>' + fmt(r['to_10pct_ratio_lower_bound'], '.2f'):>6}" if never else
                 f"{fmt(r['steps_to_10pct'], '8d')} {fmt(r['seconds_to_10pct'], '6.1f')} "
                 f"{fmt(r['to_10pct_ratio_to_erasediff'], '6.2f')}")
        print(f"{r['method']:18} {r['steps']:6d} {r['seconds']:7.1f} {fmt(r['ms_per_step'], '7.0f')} "
              f"{fmt(r['wall_ratio_to_erasediff'], '6.2f')} {to_10} "
              f"{r['forgotten_accuracy']:7.3f} {r['forgotten_entropy']:7.3f} {r['retained_accuracy']:7.3f} "
              f"{r['retained_fd']:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-class", type=int, action="append", default=None,
                        help="class to forget (repeatable; default 0)")
    parser.add_argument("--forget-samples", type=int, default=0,
                        help="instead of a class, forget this many random member images")
    parser.add_argument("--certify", action="store_true",
                        help="time to a certified erasure under the default audit's checks (see above)")
    parser.add_argument("--methods", default="",
                        help="comma-separated registry names (default: every method that serves the task)")
    parser.add_argument("--forget-concept", action="append", default=None,
                        help="text mode: erase this concept (repeatable prompts) from the built-in text model")
    parser.add_argument("--anchor", default="", help="text mode: the prompt the concept is mapped to")
    parser.add_argument("--probe-every", type=int, default=5, help="steps between forgetting probes")
    parser.add_argument("--per-class", type=int, default=200,
                        help="samples per class for the final metrics (the FD of 50 per class varies by about "
                             "+-0.5 between seeds on the reference model; 200 per class by about +-0.05)")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method parameter other than its default (repeatable), e.g. esd_u.lr=1e-5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/unlearning.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.forget_class = args.forget_class or [0]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; expected some of {METHODS.names()}")
    args.params = {}
    for pair in args.param:
        method, dot, setting = pair.partition(".")
        if not dot or method not in METHODS:
            parser.error(f"--param expects METHOD.KEY=VALUE with a registered method; got '{pair}'")
        try:
            args.params.setdefault(method, {}).update(parse_params((setting,)))
        except UsageError as error:
            parser.error(str(error))

    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, seed=0)
    recipe = TrainConfig.for_kind("text" if args.forget_concept else "class")
    model, model_dir, _ = load_or_train_reference(dataset, splits, recipe, quiet=args.quiet)
    judge = load_or_train_judge(dataset)
    start = time.perf_counter()
    sample_mode = args.forget_samples > 0
    if args.certify:
        rows = run_certify_mode(args, dataset, splits, model, judge)
        print_certify_table(rows)
    else:
        rows = (run_sample_mode if sample_mode else run_class_mode)(args, dataset, splits, model, judge)
        if not sample_mode:
            add_speed_columns(rows)
        print_table(rows, sample_mode)
        if args.forget_concept:
            print("\nmethod             largest drop of a retained digit (points)   retained FD x original")
            for r in rows[1:]:
                print(f"{r['method']:18} {100 * r['retained_max_drop']:+42.1f}   {r['fd_ratio_to_original']:22.2f}")
            print_resurrection_table(rows)
    write_json(args.json, {
        "benchmark": "unlearning", "certify": args.certify,
        "mode": "samples" if sample_mode else "text" if args.forget_concept else "class",
        "concept": args.forget_concept, "anchor": args.anchor,
        "forget": args.forget_samples if sample_mode else args.forget_class,
        "reference_model": str(model_dir), "torch_threads": torch.get_num_threads(),
        "samples_per_class": args.per_class, "probe_every": args.probe_every,
        "total_seconds": time.perf_counter() - start, "rows": rows,
    })
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
