"""The audit's probes beyond membership inference (:class:`Probe`, registry ``PROBES``): training-data extraction,
and resurrection (regeneration, inversion, relearning; an adversarial prompt for a text model)."""

from .base import PROBES, Probe
from .extraction import ExtractionProbe
from .resurrection import ResurrectionProbe

__all__ = ["PROBES", "ExtractionProbe", "Probe", "ResurrectionProbe"]
