"""The cost of one EraseDiff step: the forget and remain losses from one stacked forward vs two forwards.

    python benchmarks/erasediff_step.py --json benchmarks/results/erasediff_step.json [--repeats 2]

On the default reference model, for a class (``--forget-class``, default 0) and a ``--forget-samples`` image
deletion, EraseDiff runs with ``batched_forward`` True and False, alternating (A B A B ...) so that a slower spell
of a shared machine hits both. Each row: milliseconds per step (the loop's wall time over its steps), then what the
returned model does: forgotten and retained judge accuracy, retained Frechet distance (class task), or the forget
images' mean denoising loss (deletion), and the largest difference of the two variants' noise predictions on the
forget images (floating-point summation order differs between one stacked and two separate forwards).
Compare ratios within one run; timings on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from diffusion.data import load_digits_dataset
from diffusion.io import write_json
from diffusion.judge import load_or_train_judge
from diffusion.quality import evaluate_generation
from diffusion.reference import load_or_train_reference
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.training import TrainConfig
from unlearn import METHODS
from unlearn.losses import draw_timesteps_and_noise
from unlearn.stopping import denoising_losses


@torch.no_grad()
def predictions(model, task: ForgetTask, seed: int) -> torch.Tensor:
    """The model's noise predictions on the forget images at one fixed draw of timesteps and noise."""
    generator = torch.Generator().manual_seed(seed)
    t, noise = draw_timesteps_and_noise(model, task.forget, generator)
    x_t = model.add_noise(task.forget.images.to(model.device), noise, t)
    return model.predict_noise(x_t, t, task.forget.labels.to(model.device)).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-class", type=int, default=0)
    parser.add_argument("--forget-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=100, help="samples per class for the class task's metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/erasediff_step.json")
    args = parser.parse_args()

    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, seed=0)
    model, model_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    judge = load_or_train_judge(dataset)
    deleted = np.random.default_rng(args.seed).choice(splits.members, size=args.forget_samples, replace=False)
    tasks = {
        f"class {args.forget_class}": ForgetSpec(classes=(args.forget_class,)),
        f"{args.forget_samples} images": ForgetSpec(sample_ids=tuple(sorted(deleted.tolist()))),
    }
    rows = []
    for label, spec in tasks.items():
        task = ForgetTask.from_spec(dataset, splits, spec)
        final: dict[bool, object] = {}
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for batched in (True, False):
                start = time.perf_counter()
                result = METHODS.make("erasediff", batched_forward=batched).unlearn(model, task, seed=args.seed,
                                                                                    quiet=True)
                seconds[batched].append(time.perf_counter() - start)
                final[batched] = result.model
                print(f"{label}, batched_forward={batched}: {1000 * result.seconds / result.steps:.0f} ms/step",
                      flush=True)
        difference = float((predictions(final[True], task, args.seed)
                            - predictions(final[False], task, args.seed)).abs().max())
        for batched in (True, False):
            row = {"task": label, "batched_forward": batched, "steps": result.steps,
                   "ms_per_step": [1000 * s / result.steps for s in seconds[batched]],
                   "max_prediction_difference": difference}
            if spec.classes:
                metrics = evaluate_generation(final[batched], judge, dataset, forget_classes=spec.classes,
                                              seed=args.seed, per_class=args.per_class)
                row.update({k: metrics[k] for k in ("forgotten_accuracy", "retained_accuracy", "retained_fd")})
            else:
                row["forget_loss"] = float(denoising_losses(final[batched], task.forget, args.seed).mean())
            rows.append(row)

    print(f"\n{'task':12} {'batched':>7} {'ms/step (runs)':>22} {'median':>7} {'ratio':>6}  after the run")
    for row in rows:
        median = statistics.median(row["ms_per_step"])
        unbatched = next(r for r in rows if r["task"] == row["task"] and not r["batched_forward"])
        row["ratio_to_two_forwards"] = median / statistics.median(unbatched["ms_per_step"])
        runs = ", ".join(f"{v:.0f}" for v in row["ms_per_step"])
        after = (f"forgotten {row['forgotten_accuracy']:.3f} retained {row['retained_accuracy']:.3f} "
                 f"FD {row['retained_fd']:.2f}" if "retained_fd" in row else f"forget loss {row['forget_loss']:.4f}")
        print(f"{row['task']:12} {row['batched_forward']!s:>7} {runs:>22} {median:7.0f} "
              f"{row['ratio_to_two_forwards']:6.2f}  {after}  (max |pred diff| {row['max_prediction_difference']:.1e})")
    write_json(args.json, {"benchmark": "erasediff_step", "reference_model": str(model_dir),
                           "torch_threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows})
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
