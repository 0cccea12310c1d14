"""Whether a model given as a reference really is one: retrained without exactly this forget set.

A reference is the audit's null: a model that never saw the forget set. Given anything else (the unlearned model
itself, the original, a model retrained without another forget set, a fine-tuned model), the comparison measures
nothing and a PASS would be a false certificate. So every ``--retrained`` model is checked against what it records
(``erasediff.json``: ``erasediff unlearn --method retrain`` and the audit's own cache write one) before any work:

- not the original's or the unlearned model's weights, and not given twice (fingerprints);
- a record that says it was retrained (``method: retrain`` or ``role: retrained``), without this very forget set
  (the same classes and member images left out); a record of any other method is refused;
- a model that records none of this (trained elsewhere, a hub folder) is accepted only when the user declares the
  references (``unverified_references``), and the verdict then says so.
Data and member split are checked for every given model by :func:`diffusion.provenance.check_provenance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusion.errors import UsageError
from diffusion.splits import ForgetSpec

RETRAIN_METHOD = "retrain"


@dataclass(frozen=True)
class ReferenceCheck:
    """What is known of one given reference: ``verified`` by its record, or only declared by the user."""

    verified: bool
    how: str

    def to_dict(self) -> dict:
        return {"verified": self.verified, "how": self.how}


def check_reference(path: str, fingerprint: str, metadata: dict, spec: ForgetSpec, others: dict[str, str],
                    declared: bool) -> ReferenceCheck:
    """Refuse (:class:`UsageError`, one line) a given reference that is not a retrain without ``spec``.

    ``others`` maps a role ("the original model", "the unlearned model", "reference_1", ...) to the fingerprint
    of a model given before this one; ``declared``: the user vouches for references that record nothing.
    """
    for role, other in others.items():
        if other == fingerprint:
            raise UsageError(f"reference '{path}' has the same weights as {role}: a reference must be a model "
                             "retrained without the forget set")
    method, role = metadata.get("method"), metadata.get("role")
    if method is not None and method != RETRAIN_METHOD:
        raise UsageError(f"reference '{path}' records that it was made by '{method}' from another model, not "
                         "retrained without the forget set; give a retrained model (erasediff unlearn --method "
                         "retrain)")
    if method == RETRAIN_METHOD or role == "retrained":
        recorded = metadata.get("forget_spec")
        if _removed_images(recorded) != (list(spec.classes), list(spec.sample_ids)):
            what = _described(recorded) if recorded else "no recorded forget set"
            raise UsageError(f"reference '{path}' was retrained without {what}, not without this audit's forget "
                             f"set ({spec.describe()}); retrain it without this one")
        return ReferenceCheck(True, "its record says it was retrained without this forget set")
    if not declared:
        raise UsageError(f"reference '{path}' records no retraining without this forget set (role "
                         f"{role or 'unrecorded'}); retrain it with erasediff unlearn --method retrain, or declare "
                         "the references you give with --unverified-references")
    return ReferenceCheck(False, "declared by the user as retrained without the forget set; not verified")


def _removed_images(recorded: object) -> tuple[list, list] | None:
    """The (classes, sample ids) a recorded forget spec removed from training (a concept's prompts and anchor do
    not change what a retrain leaves out), or None."""
    if not isinstance(recorded, dict):
        return None
    return recorded.get("classes"), recorded.get("sample_ids")


def _described(recorded: object) -> str:
    """A recorded forget spec in words ("class 3", "50 member sample(s)"), or "another forget set"."""
    try:
        return ForgetSpec(classes=tuple(recorded["classes"]), sample_ids=tuple(recorded["sample_ids"]),
                          concept=tuple(recorded.get("concept", ()))).describe()
    except (TypeError, ValueError, KeyError):
        return "another forget set"
