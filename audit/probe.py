"""The audit's membership, forgetting and utility checks on candidate models, the fixed models' work done once.

A benchmark that probes an unlearning method at intervals ("time to a certified erasure") or compares variants of
it asks the same question many times: what would the audit decide if this model were the unlearned one? The
original and the K retrained references do not change between questions, so their attack fits, attack scores,
inverted class embeddings and generations are computed once; each question costs one model's share of the audit.
By default extraction and the resurrection checks (inversion, relearning) are left to the full audit: the probe
answers with the membership checks, the audit's power, the forgetting check and the two utility checks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacks import AttackScores
from diffusion.data import load_digits_dataset
from diffusion.model import DiffusionModel
from diffusion.reference import load_or_train_reference
from diffusion.splits import make_splits
from diffusion.training import TrainConfig
from reports.results import Check

from .checks import verdict
from .config import AuditConfig
from .run import GenerationMemo, examine, prepare_subjects
from .subjects import AuditSubjects

UNLEARNED = "unlearned"


@dataclass
class ProbeResult:
    """What the audit's checks say of one candidate model.

    Attributes:
        checks: the probed checks (membership per attack, audit power, forgotten generation, utility).
        comparisons: the per-attack membership comparisons, as in ``results["membership"]["attacks"]``.
        combined: the membership decision per conditioning, as in ``results["membership"]["combined"]``.
        utility: the candidate's generation metrics (``evaluate_generation``).
        sections: every measured section of the results document, keyed as in ``results.json`` (each probe's by
            model role, the fixed models' included).
    """

    checks: list[Check]
    comparisons: dict
    combined: dict
    utility: dict
    sections: dict

    def decisions(self, prefix: str = "") -> dict[str, str]:
        """{check name: decision} for the checks whose name starts with ``prefix``."""
        return {c.name: c.decision for c in self.checks if c.name.startswith(prefix)}

    def membership(self) -> dict[str, dict]:
        """Per conditioning, the membership decision (the mean over attacks, audit.membership.combine_attacks):
        decision, the mean AUC difference (unlearned minus the references' mean), its interval, and any vetoes."""
        cells = {}
        for conditioning, combined in self.combined.items():
            if "unlearned" not in combined:
                cells[conditioning] = {"decision": combined["decision"]}
                continue
            diff = combined["unlearned"]
            cells[conditioning] = {"decision": combined["decision"], "estimate": diff["estimate"],
                                   "interval": [diff["low"], diff["high"]], "vetoes": combined["vetoes"]}
        return cells

    @property
    def certified(self) -> bool:
        """Every membership check and the forgetting check PASS: the erasure the audit would certify."""
        wanted = [c for c in self.checks if c.name.startswith(("membership", "audit_power", "forgotten_generation"))]
        return verdict(wanted) == "PASS"

    @property
    def unrefuted(self) -> bool:
        """No membership or forgetting check FAILs: what a model retrained without the forget set gets when the
        audit lacks the power to certify it (an INCONCLUSIVE verdict, never a FAIL)."""
        wanted = [c for c in self.checks if c.name.startswith(("membership", "forgotten_generation"))]
        return all(c.decision != "FAIL" for c in wanted)

    @property
    def clean(self) -> bool:
        """No probed check FAILs, utility included."""
        return all(c.decision != "FAIL" for c in self.checks)


class AuditProbe:
    """Answers "what would the audit of ``config`` decide if this model were the unlearned one?".

    ``config`` is an audit configuration whose original model and references are loaded or trained (cached) once;
    its ``unlearned`` must name a model folder (e.g. the original itself) so that no method runs here. The attacks
    are fitted on the calibration split against the original, as the audit does. Each question runs the audit's own
    loop (:func:`audit.run.examine`) with the fixed models' attack scores and generation results kept, and with the
    probes in ``probes`` only (default none: extraction and resurrection are left to the full audit).
    """

    def __init__(self, config: AuditConfig, probes: Sequence[str] = ()):
        if config.unlearned is None:
            raise ValueError("AuditProbe needs config.unlearned set (e.g. to the original), so no method runs")
        self.config = config
        self.probes = list(probes)
        self.subjects: AuditSubjects = prepare_subjects(config)
        self.fixed = {role: m for role, m in self.subjects.models.items() if role != UNLEARNED}
        if self.subjects.calibration is not None:
            for attack in self.subjects.attacks:
                attack.fit(self.fixed["original"], self.subjects.calibration, seed=config.seed, quiet=config.quiet)
        self.memo: dict[tuple[str, str, str], AttackScores] = {}
        self.generation_memo: GenerationMemo = {}
        self._scratch = tempfile.TemporaryDirectory(prefix="erasediff-probe-")  # score tables and images not kept

    def __call__(self, model: DiffusionModel) -> ProbeResult:
        """The probed checks of the audit with ``model`` as the unlearned model."""
        self.subjects.models[UNLEARNED] = model
        scratch = Path(self._scratch.name)
        for folder in ("scores", "images"):
            (scratch / folder).mkdir(exist_ok=True)
        examined = examine(self.subjects, self.config, scratch / "scores", scratch / "images", scores_memo=self.memo,
                           generation_memo=self.generation_memo, probes=self.probes)
        membership, utility = examined.sections["membership"], examined.sections["utility"]
        return ProbeResult(examined.checks, membership["attacks"], membership["combined"], utility[UNLEARNED],
                           examined.sections)


def default_audit_config(
    forget_class: int | None, forget_samples: int, seed: int, work: Path, **overrides
) -> AuditConfig:
    """The default audit's configuration (the built-in reference, trained and cached when missing) for erasing
    ``forget_class`` (or ``forget_samples`` random member images drawn with ``seed``, their ids written to
    ``work/ids.txt``), with the reference standing in as the unlearned model, for :class:`AuditProbe`."""
    dataset = load_digits_dataset()
    splits = make_splits(dataset.labels, 0)
    _, original_dir, _ = load_or_train_reference(dataset, splits, TrainConfig(), quiet=True)
    base = dict(model=str(original_dir), unlearned=str(original_dir), seed=seed, quiet=True,
                out=str(work / "unused"), **overrides)
    if forget_samples:
        ids = np.random.default_rng(seed).choice(splits.members, size=forget_samples, replace=False)
        ids_file = work / "ids.txt"
        ids_file.write_text(" ".join(map(str, ids)))
        base.update(forget_classes=[], forget_ids=str(ids_file))
    else:
        base.update(forget_classes=[0 if forget_class is None else forget_class])
    return AuditConfig(**base)
