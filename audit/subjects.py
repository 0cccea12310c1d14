"""What an audit examines: the data, the forget task, the attacks and the models, keyed by role."""

from __future__ import annotations

from dataclasses import dataclass

from attacks import Attack, CalibrationSet
from diffusion.data import ImageDataset, LabeledImages
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.splits import ForgetSpec, ForgetTask, Splits

from .membership import ScoredSets


@dataclass
class AuditSubjects:
    """The data, the forget task, the attacks and the models under audit, keyed by role.

    Roles: ``original``, ``unlearned`` and ``reference_1`` .. ``reference_K`` (retrained without the forget set).
    ``sets`` are the images every attack scores; ``inversion_images`` (heldout images of the erased classes, never
    scored) are what an attacker fits a new class embedding on; ``calibration`` (retained members and heldout
    non-members, never scored) is what the attacks fit their free choices on.
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

    def forgotten_classes(self) -> list[int]:
        """The classes the probes generate as the forgotten ones: the erased classes, or for a deletion of member
        images the classes those images belong to."""
        if self.spec.classes:
            return list(self.spec.classes)
        return sorted(set(self.dataset.labels[self.task.forget.ids].tolist()))
