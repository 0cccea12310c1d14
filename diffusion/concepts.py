"""Deletion requests for text-to-image models: a concept named by prompts and an anchor (the captioned task they
make is :meth:`~diffusion.text_model.TextDiffusionModel.forget_task`).

A concept prompt names one class of the data, in the words its captions use (:class:`~diffusion.captions.ClassCaptions`:
"three" or "3" for the digits, a folder's class name otherwise); the concept's images are that class's member images.
The forget set is conditioned on the concept prompts (what a user who erases a concept from Stable Diffusion gives:
the prompts, not the training captions), the remaining data on each image's training caption (its own, when the data
has captions).
"""

from __future__ import annotations

from collections.abc import Sequence

from .captions import ClassCaptions
from .data import ImageDataset
from .errors import UsageError
from .io import read_text_file
from .splits import ForgetSpec

HELDOUT_CAPTIONS = 8  # captions of held-out concept images a regeneration probe tries, besides the class's wordings


def named_class(prompt: str, wordings: ClassCaptions) -> int:
    """The one class a prompt names (:meth:`ClassCaptions.classes_named`); a :class:`UsageError` when it names none
    or several."""
    named = wordings.classes_named(prompt)
    if len(named) != 1:
        found = "no class" if not named else f"classes {sorted(named)}"
        examples = " or ".join(f"'{name}'" for name in wordings.names[min(3, wordings.num_classes - 1)])
        raise UsageError(f"concept prompt '{prompt}' names {found}; a concept is one class of the data, named as "
                         f"its captions name it (e.g. {examples})")
    return named.pop()


def concept_spec(prompts: Sequence[str], wordings: ClassCaptions, anchor: str = "", label: str = "",
                 sample_ids: Sequence[int] = ()) -> ForgetSpec:
    """The deletion request "erase the concept of ``prompts``, mapped to ``anchor``" on data captioned by
    ``wordings`` (and the member images ``sample_ids``, under their own captions).

    Refused (one line each): no prompt, an empty prompt, prompts naming different classes, an anchor equal to a
    concept prompt or naming the concept's class.
    """
    prompts = tuple(" ".join(p.split()) for p in prompts)
    if not prompts or not all(prompts):
        raise UsageError("the concept needs at least one non-empty prompt (--forget-concept TEXT)")
    classes = {named_class(p, wordings) for p in prompts}
    if len(classes) > 1:
        raise UsageError(f"the concept prompts name different classes {sorted(classes)}; erase one concept at a time")
    anchor = " ".join(anchor.split())
    if anchor.lower() in {p.lower() for p in prompts}:
        raise UsageError(f"the anchor '{anchor}' equals the concept; give an anchor the concept is mapped to "
                         "(e.g. '' for the empty prompt or another class)")
    concept = classes.pop()
    if anchor and concept in wordings.classes_named(anchor):
        raise UsageError(f"the anchor '{anchor}' names the concept's class {concept}; the concept would be kept")
    return ForgetSpec(classes=(concept,), sample_ids=tuple(sample_ids), label=label, concept=prompts, anchor=anchor)


def unused_wordings(spec: ForgetSpec, dataset: ImageDataset, heldout_ids: Sequence[int] = ()) -> list[str]:
    """What a regeneration probe asks for: every wording (training and held-out) of the concept's class, then, when
    the data has captions, the own captions of the held-out images ``heldout_ids`` (at most
    :data:`HELDOUT_CAPTIONS`; never trained on), each once, none of them a prompt the erasure was given."""
    wordings = dataset.class_wordings
    prompts = wordings.captions(spec.classes[0], wordings.every_template)
    if dataset.captions is not None:
        prompts += list(dict.fromkeys(dataset.captions[i] for i in heldout_ids))[:HELDOUT_CAPTIONS]
    return [p for p in dict.fromkeys(prompts) if p not in spec.concept]


MAX_PROMPTS_BYTES = 2**20  # a concept's prompts are a few lines


def read_prompts(path: str) -> tuple[str, ...]:
    """The prompts of a text file, one per non-empty line; a :class:`UsageError` naming an unreadable file."""
    lines = read_text_file(path, "prompts file", MAX_PROMPTS_BYTES, "a text file of one prompt per line").splitlines()
    prompts = tuple(line.strip() for line in lines if line.strip())
    if not prompts:
        raise UsageError(f"the prompts file '{path}' holds no prompt; expected one prompt per line")
    return prompts
