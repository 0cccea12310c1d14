"""The contract of an audit probe beyond membership inference, and its registry.

A probe runs on every model of the audit (original, unlearned, references) and returns, per model, one JSON-ready
section (``results[probe.name][role]``) and the images the report shows; it declares its own checks against the
references. ``run_audit`` is one loop over the registered probes, and the report shows a probe's section in one
template block. Other packages add probes under the entry-point group ``erasediff.probes``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from diffusion.model import DiffusionModel
from diffusion.params import Parameterized
from diffusion.registry import Registry
from reports.results import Check

from ..config import AuditConfig, Thresholds
from ..subjects import AuditSubjects


class Probe(Parameterized, ABC):
    """One probe of the audit: :meth:`run` per model, :meth:`checks` from the results document."""

    name: ClassVar[str]  # the results key of its section

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        """Whether the probe runs in this audit (default: always)."""
        return True

    @abstractmethod
    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        """The section of the model playing ``role`` (JSON-ready) and the images written to ``images_dir``
        (results key -> file name)."""

    @abstractmethod
    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        """The probe's checks from a results document: its section keyed by role, and the references listed in
        ``results["membership"]["references"]`` (none without references)."""


PROBES: Registry[Probe] = Registry("audit probe", Probe, "erasediff.probes")
