"""Erasures in sequence: the history an unlearned model records, and the deletion they add up to.

Deletion requests arrive one after another, and each erasure starts from the model the last one left (the
continual setting of UnlearnCanvas: Zhang et al., "UnlearnCanvas: Stylized Image Dataset for Enhanced Machine
Unlearning Evaluation in Diffusion Models", NeurIPS 2024 Datasets and Benchmarks). So a later erasure must not
fine-tune on what an earlier one removed, and an audit of the last model checks every erased class, concept or
image of the history against models retrained without all of them.

A model written by ``erasediff unlearn`` records its own erasure (``method``, ``forget_spec``, ``parent_model``)
and, when its input was itself unlearned, the input's erasures under ``history`` (oldest first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import UsageError
from .splits import ForgetSpec, Splits


def erasure_history(record: dict) -> list[dict]:
    """Every erasure a model went through, oldest first (its recorded ``history``, then its own), each
    {method, forget_spec, parent_fingerprint}; [] for a model no erasure made."""
    if record.get("role") != "unlearned" or "forget_spec" not in record:
        return []
    own = {"method": record.get("method"), "forget_spec": record["forget_spec"],
           "parent_fingerprint": (record.get("parent_model") or {}).get("fingerprint")}
    return [*record.get("history", []), own]


def history_spec(erasure: dict) -> ForgetSpec:
    """The forget spec one recorded erasure removed."""
    spec = erasure["forget_spec"]
    return ForgetSpec(classes=tuple(spec.get("classes", ())), sample_ids=tuple(spec.get("sample_ids", ())),
                      label=spec.get("label", ""), concept=tuple(spec.get("concept", ())),
                      anchor=spec.get("anchor", ""))


def erased_member_ids(history: Sequence[dict], labels: np.ndarray, splits: Splits) -> np.ndarray:
    """The member ids every erasure of ``history`` removed (sorted): what a later erasure must not train on."""
    ids = [history_spec(erasure).forget_ids(labels, splits) for erasure in history]
    return np.unique(np.concatenate(ids)) if ids else np.array([], np.int64)


def cumulative_spec(spec: ForgetSpec, history: Sequence[dict]) -> ForgetSpec:
    """The deletion ``spec`` and every erasure of ``history`` together: their classes and sample ids (the
    concept of a text model, which must be one and the same)."""
    if not history:
        return spec
    earlier = [history_spec(erasure) for erasure in history]
    concepts = {s.concept for s in (spec, *earlier) if s.concept}
    if len(concepts) > 1:
        raise UsageError(f"the model's history erases {len(concepts)} different concepts "
                         f"({', '.join(repr(c[0]) for c in sorted(concepts))}); an audit checks one concept at a time: "
                         "audit each erasure against the model it started from")
    classes = {c for s in (spec, *earlier) for c in s.classes}
    samples = {i for s in (spec, *earlier) for i in s.sample_ids}
    concept = next(iter(concepts), ())
    anchor = spec.anchor if spec.concept else next((s.anchor for s in earlier if s.concept), "")
    label = spec.label or " + ".join(s.describe() for s in (*earlier, spec))
    return ForgetSpec(classes=tuple(classes), sample_ids=tuple(samples), label=label, concept=concept, anchor=anchor)
