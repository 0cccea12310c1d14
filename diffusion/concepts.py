"""Deletion requests for text-to-image models: a concept named by prompts, an anchor, and the captioned task.

A concept prompt names one class of the data, in the words its captions use (:class:`~diffusion.captions.ClassCaptions`:
"three" or "3" for the digits, a folder's class name otherwise); the concept's images are that class's member images.
The forget set is conditioned on the concept prompts (what a user who erases a concept from Stable Diffusion gives:
the prompts, not the training captions), the remaining data on each image's training caption (its own, when the data
has captions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .captions import ClassCaptions, check_survives_tokenization
from .data import ImageDataset, LabeledImages
from .errors import UsageError
from .io import read_text_file
from .model import DiffusionModel
from .seeding import derive_seed
from .splits import ForgetSpec, ForgetTask, Splits
from .text_model import TextDiffusionModel

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


def training_captions(dataset: ImageDataset, ids: torch.Tensor, model: TextDiffusionModel, seed: int) -> torch.Tensor:
    """The training caption of each image ``ids`` of ``dataset``: token ids (N, L). Its own caption when the data
    has captions, else one training wording of its class drawn from (``seed``, sample id)."""
    if dataset.captions is not None:
        return model.tokenize([dataset.captions[i] for i in ids.tolist()])
    wordings, texts = dataset.class_wordings, []
    for label, sample_id in zip(dataset.labels[ids].tolist(), ids.tolist()):
        generator = torch.Generator().manual_seed(derive_seed(seed, "caption", sample_id))
        choice = int(torch.randint(len(wordings.train_templates), (1,), generator=generator))
        texts.append(wordings.captions(label)[choice])
    return model.tokenize(texts)


def captioned(subset: LabeledImages, model: TextDiffusionModel, dataset: ImageDataset, seed: int,
              prompts: Sequence[str] | None = None) -> LabeledImages:
    """``subset`` (images of ``dataset``) as the text model sees it: images encoded
    (:meth:`TextDiffusionModel.encode`), labels replaced by token ids (N, L) of ``prompts`` (cycled) or, without
    prompts, of each image's training caption (:func:`training_captions`)."""
    if prompts:
        tokens = model.tokenize([prompts[i % len(prompts)] for i in range(len(subset))])
    else:
        tokens = training_captions(dataset, subset.ids, model, seed)
    return LabeledImages(model.encode(subset.images), tokens, subset.ids)


def model_view(model: DiffusionModel, dataset: ImageDataset, seed: int):
    """A function giving images of ``dataset`` as ``model`` takes them: a text model's captioned
    (:func:`captioned`), a class model's as they are."""
    if model.conditioning == "text":
        return lambda subset: captioned(subset, model, dataset, seed)
    return lambda subset: subset


def text_task(dataset: ImageDataset, splits: Splits, spec: ForgetSpec, model: TextDiffusionModel,
              seed: int = 0) -> ForgetTask:
    """The :class:`ForgetTask` of ``spec`` for a text model: the concept's images under the concept prompts (a
    sample deletion: the images under their own captions), the rest under their captions, and the anchor."""
    spec.validate(dataset.labels, splits, dataset.num_classes)
    for prompt in spec.concept:
        check_survives_tokenization(model.tokenizer, prompt, "the concept prompt")
    check_survives_tokenization(model.tokenizer, spec.anchor, "the anchor prompt")
    forget = dataset.select(spec.forget_ids(dataset.labels, splits))
    retain = dataset.select(spec.retain_ids(dataset.labels, splits))
    return ForgetTask(
        forget=captioned(forget, model, dataset, seed, spec.concept),
        retain=captioned(retain, model, dataset, seed),
        forget_classes=spec.classes,
        num_classes=dataset.num_classes,
        anchor=model.tokenize([spec.anchor])[0],
    )


def task_for_model(dataset: ImageDataset, splits: Splits, spec: ForgetSpec, model: DiffusionModel,
                   seed: int = 0) -> ForgetTask:
    """The :class:`ForgetTask` of ``spec`` as ``model`` takes it: captioned for a text model (:func:`text_task`),
    class-labelled otherwise; a :class:`UsageError` when the request does not fit the model's conditioning."""
    if model.conditioning == "text":
        if spec.classes and not spec.concept:
            raise UsageError("a text-to-image model erases a concept: name it with --forget-concept TEXT (or delete "
                             "images with --forget-ids); --forget-class is for class-conditional models")
        return text_task(dataset, splits, spec, model, seed)
    if spec.concept:
        raise UsageError("--forget-concept erases a concept from a text-to-image model; this model is conditioned on "
                         f"{model.conditioning} (use --forget-class or --forget-ids)")
    return ForgetTask.from_spec(dataset, splits, spec)


MAX_PROMPTS_BYTES = 2**20  # a concept's prompts are a few lines


def read_prompts(path: str) -> tuple[str, ...]:
    """The prompts of a text file, one per non-empty line; a :class:`UsageError` naming an unreadable file."""
    lines = read_text_file(path, "prompts file", MAX_PROMPTS_BYTES, "a text file of one prompt per line").splitlines()
    prompts = tuple(line.strip() for line in lines if line.strip())
    if not prompts:
        raise UsageError(f"the prompts file '{path}' holds no prompt; expected one prompt per line")
    return prompts
