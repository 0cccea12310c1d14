"""The canary test as an audit probe: deleted canaries against never-included ones, on every model of the audit.

When the original was trained with canaries (``config.canaries``: :mod:`diffusion.canaries`), the audit deletes the
included ones with the user's forget set, and this probe runs the canary audit's exact test (:mod:`audit.canary`;
Zhang, Das, Kamath, Tramer, SaTML 2025; Steinke, Nasr, Jagielski, NeurIPS 2023) on each model: the unlearned model
is decided, the original shows the test's power, and every reference (retrained without them) shows the test's
null at work. Its check stands beside the retrained-reference checks and needs no reference.
"""

from __future__ import annotations

from pathlib import Path

from diffusion.model import DiffusionModel
from reports.results import Check

from ..canary import CanaryAuditConfig, canary_section, canary_verdict
from ..config import AuditConfig, Thresholds
from ..subjects import AuditSubjects
from .base import PROBES, Probe


@PROBES.register
class CanaryProbe(Probe):
    """Every canary scored by the canary audit's attacks (their paper defaults) on one model; the section is
    :func:`audit.canary.canary_test`'s, the check :func:`audit.canary.canary_verdict` on the unlearned model and the
    original. Runs when the audit is given ``canaries``."""

    name = "canary"

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        return config.canaries is not None

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        return canary_section(model, subjects.dataset, _test_config(config.canaries, config.seed, config.quiet)), {}

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        sections = results.get(self.name)
        if not sections:
            return []
        test = _test_config("", 0, True)
        decision, why = canary_verdict(sections, test)
        return [Check("canary", "the deleted canaries are not found on the unlearned model (an exact randomisation "
                      "test against the never-included ones; no reference needed)", decision,
                      sections["unlearned"]["test_auc"], None,
                      f"p >= {test.alpha:g} on the unlearned model, p < {test.alpha:g} on the original, AUC bound "
                      f"<= {0.5 + test.auc_margin:g} at {test.confidence:.0%}", why)]


def _test_config(canaries: str, seed: int, quiet: bool) -> CanaryAuditConfig:
    """The canary audit's defaults (attacks, alpha, margin, permutations) on ``canaries`` with the audit's seed."""
    return CanaryAuditConfig(canaries, "", "", seed=seed, quiet=quiet)
