"""The audit's probes beyond membership inference (:class:`Probe`, registry ``PROBES``): training-data extraction,
resurrection (regeneration, inversion, relearning; an adversarial prompt for a text model) and, for a model trained
with canaries, the canary test."""

from .base import PROBES, Probe
from .canary import CanaryProbe
from .extraction import ExtractionProbe
from .resurrection import ResurrectionProbe

__all__ = ["PROBES", "CanaryProbe", "ExtractionProbe", "Probe", "ResurrectionProbe"]
