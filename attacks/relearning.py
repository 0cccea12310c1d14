"""Relearning: how fast an erased class comes back when the model is fine-tuned on a few images of it.

Knowledge that was hidden rather than removed returns after a few benign fine-tuning steps: Suriyakumar et al.,
"Unstable Unlearning: The Hidden Risk of Concept Resurgence in Diffusion Models" (arXiv 2410.08074, 2024); Hu et
al., "Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign Relearning" (ICLR 2025). A real
erasure relearns the class no faster than models that never saw it; a model whose class was only hidden (e.g. its
conditioning redirected) relearns it in a few steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from tqdm.auto import tqdm

from diffusion.captions import ClassCaptions
from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.params import Interval, SequenceOf, validate_params
from diffusion.quality import generate_per_class, judged_correct
from diffusion.seeding import derive_seed

from .regeneration import POSITIVE_INT, check_erased_classes


@dataclass
class RelearningCurve:
    """Judge accuracy on the erased classes, generated under their own labels, along a fine-tuning run.

    Attributes:
        checkpoints: fine-tuning steps at which the model was sampled (0 = before any step).
        judge_accuracy: accuracy at each checkpoint over ``num_images`` samples (the same noises every time).
        num_images: samples judged per checkpoint (``per_class`` x classes).
        correct: (checkpoints, num_images) 0/1 judgments, sample j from the same starting noise at every checkpoint
            and in every model (so models can be compared image by image).
        area: mean accuracy over the checkpoints after step 0 (the area under the curve, in [0, 1]);
            ``per_image_area`` (num_images,): each starting noise's share of correct samples after step 0.
        fit_ids: dataset ids of the images fine-tuned on.
        params: the probe's settings.
    """

    checkpoints: list[int]
    judge_accuracy: list[float]
    num_images: int
    correct: list[list[float]]
    fit_ids: list[int]
    params: dict

    @property
    def area(self) -> float:
        after = [a for step, a in zip(self.checkpoints, self.judge_accuracy) if step > 0]
        return sum(after) / len(after)

    @property
    def per_image_area(self) -> list[float]:
        after = [row for step, row in zip(self.checkpoints, self.correct) if step > 0]
        return [sum(column) / len(after) for column in zip(*after)]

    def to_dict(self) -> dict:
        return {"checkpoints": self.checkpoints, "judge_accuracy": self.judge_accuracy, "area": self.area,
                "per_image_area": self.per_image_area, "num_images": self.num_images, "fit_ids": self.fit_ids,
                **self.params}


class BenignFineTuning:
    """A copy of a model fine-tuned step by step (every trainable weight, AdamW, no weight decay) with the DDPM loss
    on ``images`` (N, C, H, W) under their own labels or captions: what a user of a shipped model does, and what
    the relearning probe and the membership-after-fine-tuning probe (audit/probes/finetuned_membership.py) do to
    every model alike. Batches, timesteps and noises derive from ``seed`` alone, so every model is fine-tuned on
    the same sequence; the model given is never changed."""

    def __init__(self, model: DiffusionModel, images: LabeledImages, *, lr: float, batch_size: int, seed: int):
        self.model = model.copy()
        self.model.unet.train()
        self.optimizer = torch.optim.AdamW(self.model.trainable_parameters(), lr=lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "relearning"))
        self.x0, self.labels = images.images.to(self.model.device), images.labels.to(self.model.device)
        self.batch_size, self.step = batch_size, 0

    def run_until(self, step: int) -> DiffusionModel:
        """Fine-tune up to ``step`` steps in all; returns the fine-tuned model (the same object, trained on)."""
        model, size = self.model, self.batch_size
        while self.step < step:
            pick = torch.randint(0, len(self.x0), (size,), generator=self.generator).to(model.device)
            t = torch.randint(0, model.num_train_timesteps, (size,), generator=self.generator).to(model.device)
            noise = torch.randn((size, *self.x0.shape[1:]), generator=self.generator).to(model.device)
            loss = model.denoising_loss(self.x0[pick], self.labels[pick], t, noise).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
        return model


def relearning_curve(
    model: DiffusionModel,
    judge: Judge,
    images: LabeledImages,
    classes: Sequence[int],
    *,
    checkpoints: Sequence[int] = (0, 10, 25, 50, 100),
    lr: float = 1e-4,
    batch_size: int = 16,
    per_class: int = 50,
    sample_steps: int = 20,
    seed: int = 0,
    quiet: bool = True,
    wordings: ClassCaptions | None = None,
) -> RelearningCurve:
    """Fine-tune a copy of ``model`` (every trainable weight, AdamW) with the DDPM loss on ``images`` of the
    erased ``classes`` under their own labels (a text model: under their captions), and judge ``per_class`` DDIM
    samples per class at each checkpoint (a text model is asked for each class in the data's ``wordings``).

    ``lr`` 1e-4 (EraseDiff's and fine-tuning's rate) keeps learning from scratch slow enough to see: on the 8x8
    digits reference (class 0, 8 images) the original stays at 100% while a model retrained without the class
    climbs 2% -> 14% -> 24% -> 56% -> 90% over 0-100 steps; at 1e-3 both are near 100% within 25 steps
    (benchmarks/results/defaults.md).

    ``images`` (N, C, H, W) should be images the scored sets never use (an audit passes its held-out images of
    the erased classes kept aside). Timesteps, noises and batches derive from ``seed``, so every model is
    fine-tuned on the same sequence and sampled from the same noises. The model passed in is never changed.
    """
    classes = check_erased_classes(model, images, classes, "the relearning probe", wordings)
    given = {"checkpoints": list(checkpoints), "lr": lr, "batch_size": batch_size, "per_class": per_class,
             "sample_steps": sample_steps}
    validate_params({"checkpoints": [SequenceOf(Interval(Integral, 0, None))], "lr": [Interval(Real, 0, None,
                     closed="neither")], "batch_size": POSITIVE_INT, "per_class": POSITIVE_INT,
                     "sample_steps": POSITIVE_INT}, given, "relearning_curve")
    checkpoints = sorted({int(c) for c in checkpoints})
    if not checkpoints or checkpoints[-1] == 0:
        raise UsageError(f"the relearning probe needs a checkpoint after step 0; got checkpoints {checkpoints}")
    # a text model's images carry captions (B, L), not classes: they are used whole (give images of the concept)
    fit = images if images.labels.ndim == 2 else images.take(torch.isin(images.labels, torch.tensor(classes)))
    tuner = BenignFineTuning(model, fit, lr=lr, batch_size=batch_size, seed=seed)
    accuracy, correct = [], []
    for target in tqdm(checkpoints, desc="relearning", disable=quiet, leave=False):
        tuner.run_until(target)
        generated, wanted = generate_per_class(tuner.model, classes, per_class, seed=seed, steps=sample_steps,
                                               wordings=wordings)
        judged = judged_correct(judge.probabilities(generated), wanted)
        accuracy.append(float(judged.mean()))
        correct.append(judged.tolist())
    params = {"classes": classes, "lr": lr, "batch_size": batch_size, "per_class": per_class,
              "sampler": f"ddim-{sample_steps}", "seed": seed}
    return RelearningCurve(checkpoints, accuracy, per_class * len(classes), correct, fit.ids.tolist(), params)
