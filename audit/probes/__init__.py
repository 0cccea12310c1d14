"""The audit's probes beyond membership inference (:class:`Probe`, registry ``PROBES``): training-data extraction,
resurrection (regeneration, inversion, relearning; an adversarial prompt for a text model), the retained members'
exposure, membership after fine-tuning, side effects per class and, for a model trained with canaries, the canary
test."""

from .base import PROBES, Probe
from .canary import CanaryProbe
from .exposure import ExposureProbe
from .extraction import ExtractionProbe
from .finetuned_membership import FinetunedMembershipProbe
from .resurrection import ResurrectionProbe
from .side_effects import SideEffectsProbe

__all__ = ["PROBES", "CanaryProbe", "ExposureProbe", "ExtractionProbe", "FinetunedMembershipProbe", "Probe",
           "ResurrectionProbe", "SideEffectsProbe"]
