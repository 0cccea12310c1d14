"""What an audit examines: the data, the forget task, the attacks and the models, keyed by role."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from attacks import Attack, CalibrationSet
from attacks.inversion import InvertedConditioning, fit_class_embedding
from diffusion.data import ImageDataset, LabeledImages
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.quality import evaluate_generation
from diffusion.splits import ForgetSpec, ForgetTask, Splits

from .config import AuditConfig
from .membership import ScoredSets

INVERSION_IMAGES_PER_CLASS = 8  # heldout images per erased class kept aside (never scored) to fit an embedding


@dataclass
class AuditSubjects:
    """The data, the forget task, the attacks and the models under audit, keyed by role.

    Roles: ``original``, ``unlearned`` and ``reference_1`` .. ``reference_K`` (retrained without the forget set).
    ``sets`` are the images every attack scores; ``inversion_images`` (heldout images of the erased classes, never
    scored) are what an attacker fits a new class embedding on; ``calibration`` (retained members and heldout
    non-members, never scored) is what the attacks fit their free choices on. ``without_references``: why there is
    no reference (then membership is compared with chance, :mod:`audit.membership`), None when there are.
    """

    dataset: ImageDataset
    splits: Splits
    spec: ForgetSpec
    task: ForgetTask
    attacks: list[Attack]
    judge: Judge
    models: dict[str, DiffusionModel]
    references: list[str]
    sources: dict[str, dict]
    unlearning: dict | None
    sets: ScoredSets
    inversion_images: LabeledImages | None
    calibration: CalibrationSet | None
    without_references: str | None = None  # why no model retrained without the forget set is compared with
    exposure: ScoredSets | None = None  # retained members and heldout images: the remaining members' exposure
    _inversions: dict[tuple[str, int], InvertedConditioning] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def training_members(self) -> LabeledImages:
        """The original model's training members (what extraction matches generated images against)."""
        return self.dataset.select(self.splits.members)

    def forgotten_classes(self) -> list[int]:
        """The classes the probes generate as the forgotten ones: the erased classes, or for a deletion of member
        images the classes those images belong to."""
        if self.spec.classes:
            return list(self.spec.classes)
        return sorted(set(self.dataset.labels[self.task.forget.ids].tolist()))

    def inversion(self, model: DiffusionModel, config: AuditConfig) -> InvertedConditioning | None:
        """A class embedding per erased class fitted for ``model`` on the images kept aside; None for a deletion of
        member images (they keep their own classes) and for a text model (its concept inversion learns a word).
        Fitted once per model (by its weights' fingerprint): the inverted membership conditioning and the
        resurrection probe use the same one."""
        if self.inversion_images is None or self.task.anchor is not None:
            return None
        key = (model.fingerprint(), config.seed)
        if key not in self._inversions:
            self._inversions[key] = fit_class_embedding(model, self.inversion_images, self.spec.classes,
                                                        seed=config.seed, images_per_class=INVERSION_IMAGES_PER_CLASS,
                                                        quiet=config.quiet)
        return self._inversions[key]

    def utility(self, model: DiffusionModel, config: AuditConfig) -> dict:
        """``model``'s generation quality: every class judged, forgotten and retained apart
        (:func:`diffusion.quality.evaluate_generation`)."""
        return evaluate_generation(model, self.judge, self.dataset, forget_classes=self.spec.classes,
                                   per_class=config.eval_samples_per_class,
                                   forgotten_per_class=config.forgotten_samples_per_class, seed=config.seed,
                                   steps=config.eval_steps)
