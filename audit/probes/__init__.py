"""The audit's probes beyond membership inference (:class:`Probe`, registry ``PROBES``): extraction so far; the
generation, resurrection and relearning probes still run in audit/run.py."""

from .base import PROBES, Probe
from .extraction import ExtractionProbe

__all__ = ["PROBES", "ExtractionProbe", "Probe"]
