"""Captions of a labelled image dataset and the tokenizer the project builds for them (nothing downloaded).

A text-to-image model is trained on several wordings per class and judged on wordings it never saw, so that erasing
"three" is tested on wordings the erasure did not use either. The bundled digits (and a folder of them, classes
named by the numerals 0..9) are captioned by digit name and numeral ("a handwritten digit three", "the number 3");
any other folder by its class names ("a photo of a golden retriever"). The tokenizer is a CLIP BPE tokenizer
(``transformers.CLIPTokenizer``, the class Stable Diffusion's folders hold) whose vocabulary makes every word of the
captions one token; any other text falls back to single characters. It is saved and loaded like SD's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import CLIPTokenizer

from .errors import UsageError
from .params import cut_text

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word}: the class's name; {digit}: the numeral. Training and held-out wordings share no template.
TRAIN_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}",
    "a picture of the digit {word}",
    "{word}",
    "the numeral {digit} drawn by hand",
)
HELDOUT_TEMPLATES = (
    "an image of a handwritten {word}",
    "digit {digit}",
    "a scan of the number {word}",
)
# the wordings of a class known by its name only (a folder's class names)
NAMED_TRAIN_TEMPLATES = (
    "a photo of a {word}",
    "{word}",
    "an image showing a {word}",
    "a picture of the {word}",
    "the {word} seen clearly",
)
NAMED_HELDOUT_TEMPLATES = (
    "a close up of a {word}",
    "a snapshot of the {word}",
    "{word} in a photograph",
)
START, END = "<|startoftext|>", "<|endoftext|>"
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_TOKENS = 16  # the longest caption has 8 words: room for paraphrases and attack tokens
MAX_VOCABULARY_WORDS = 2000  # the built-in tokenizer's build time grows with the square of its words


@dataclass(frozen=True)
class ClassCaptions:
    """How captions word the classes of a dataset.

    Attributes:
        names: per class id, the names a prompt may call it by; the first fills a template's ``{word}``, the last
            its ``{digit}`` ("three" and "3" for a digit, the class name alone otherwise).
        train_templates: the wordings a model is trained on.
        heldout_templates: other wordings, for judging and for prompts an erasure was not given.
    """

    names: tuple[tuple[str, ...], ...]
    train_templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def captions(self, label: int, templates: Sequence[str] | None = None) -> list[str]:
        """Every wording of ``templates`` (default: the training ones) for the class ``label``."""
        if not 0 <= label < self.num_classes:
            raise ValueError(f"class label must be in 0..{self.num_classes - 1}; got {label}")
        names = self.names[label]
        return [t.format(word=names[0], digit=names[-1]) for t in templates or self.train_templates]

    def heldout_prompts(self, labels: Sequence[int]) -> list[str]:
        """A prompt per class label: the class's held-out wordings, cycled (never a training one)."""
        templates = self.heldout_templates
        return [self.captions(label, templates)[i % len(templates)] for i, label in enumerate(labels)]

    @property
    def every_template(self) -> tuple[str, ...]:
        """The training wordings, then the held-out ones."""
        return self.train_templates + self.heldout_templates

    def every_caption(self) -> list[str]:
        """Every training and held-out wording of every class: the text a tokenizer must know."""
        return [text for label in range(self.num_classes) for text in self.captions(label, self.every_template)]

    def classes_named(self, prompt: str) -> set[int]:
        """The classes whose name appears in ``prompt`` as whole words (case and punctuation ignored)."""
        words = f" {' '.join(re.findall(r'[a-z0-9]+', prompt.lower()))} "
        return {label for label, names in enumerate(self.names) if any(f" {name} " in words for name in names)}


DIGIT_CAPTIONS = ClassCaptions(tuple((word, str(d)) for d, word in enumerate(DIGIT_WORDS)), TRAIN_TEMPLATES,
                               HELDOUT_TEMPLATES)


def class_captions(class_names: Sequence[str]) -> ClassCaptions:
    """The captions of a dataset with these class names: the digits' for ten classes whose names hold the numerals
    0..9 in order ("0" or "digit0": the bundled digits, a folder of them), otherwise wordings of each name
    (lowercased, ``_`` and ``-`` read as spaces)."""
    if [re.sub(r"\D", "", name) for name in class_names] == [str(d) for d in range(len(DIGIT_WORDS))]:
        return DIGIT_CAPTIONS
    names = tuple((" ".join(re.split(r"[\s_-]+", name.lower())).strip(),) for name in class_names)
    return ClassCaptions(names, NAMED_TRAIN_TEMPLATES, NAMED_HELDOUT_TEMPLATES)


def build_tokenizer(texts: Iterable[str], max_length: int = MAX_TOKENS) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary holds every word of ``texts`` as one token.

    The vocabulary starts with the two special tokens and every lowercase letter and digit, plain and word-final
    (so any other word still tokenizes, letter by letter). Then, word by word, the word is tokenized with the
    merges so far and merges joining its pieces left to right are appended: appended merges rank after every
    earlier one, so the words already made whole stay whole.
    """
    words = sorted({word for text in texts for word in text.lower().split()})
    unknown = sorted({char for word in words for char in word} - set(CHARACTERS))
    if unknown:
        raise ValueError(f"captions may hold only letters and digits; got {''.join(unknown)!r}")
    if len(words) > MAX_VOCABULARY_WORDS:
        raise ValueError(f"captions hold {len(words)} distinct words; the built-in tokenizer takes at most "
                         f"{MAX_VOCABULARY_WORDS} (its build grows with the square of the words: 3,000 take ~20 s); "
                         "for richer captions fine-tune a model with its own CLIP tokenizer")
    vocab = {START: 0, END: 1}
    for char in CHARACTERS:
        vocab[char], vocab[char + "</w>"] = len(vocab), len(vocab) + 1
    merges: list[tuple[str, str]] = []
    for word in words:
        tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=max_length)
        pieces = tokenizer.tokenize(word)
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged += piece
            vocab.setdefault(merged, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


class CaptionDropout:
    """Replace each caption by the empty prompt with probability ``p``: the model also learns the unconditional
    prediction that classifier-free guidance needs (Ho and Salimans, arXiv 2207.12598)."""

    def __init__(self, empty: torch.Tensor, p: float):
        self.empty = empty
        self.p = p

    def __call__(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``tokens`` (B, L) with rows dropped to the empty prompt's ids, drawn from ``generator``."""
        dropped = torch.rand(len(tokens), generator=generator) < self.p
        tokens = tokens.clone()
        tokens[dropped] = self.empty
        return tokens


def token_ids(tokenizer: CLIPTokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Token ids (B, L) of ``texts``, padded and cut to the tokenizer's length."""
    return tokenizer(list(texts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


def check_survives_tokenization(tokenizer: CLIPTokenizer, text: str, what: str) -> None:
    """Raise :class:`UsageError` unless the model will read ``text`` whole: no character its tokenizer maps to the
    unknown token, and no token beyond its length (two places go to the start and end tokens)."""
    per_word = {word: tokenizer.tokenize(word) for word in text.split()}  # word by word: CLIP splits on spaces
    tokens = [token for word in text.split() for token in per_word[word]]  # first (and never warns on length)
    unknown = tokenizer.unk_token
    if unknown in tokens:
        lost = [word for word, pieces in per_word.items() if unknown in pieces]
        raise UsageError(f"{what} '{cut_text(text, 60)}' has characters this model's tokenizer does not know (in "
                         f"{cut_text(', '.join(map(repr, lost)), 60)}): they would reach the model as "
                         f"'{unknown}'; use words it knows")
    room = tokenizer.model_max_length - 2
    if len(tokens) > room:
        cut = "".join(tokens[room:]).replace("</w>", " ").strip()
        raise UsageError(f"{what} '{cut_text(text, 60)}' is {len(tokens)} tokens long but this model reads {room}: "
                         f"'{cut_text(cut, 40)}' would be cut off; shorten it")


class CaptionSampler:
    """A random caption per image for training: one of the training wordings of the image's class
    (:class:`ClassCaptions`), then :class:`CaptionDropout` with probability ``dropout``. ``tokens[c, k]`` holds the
    token ids (L,) of wording k for class c."""

    def __init__(self, tokenizer: CLIPTokenizer, class_wordings: ClassCaptions, dropout: float = 0.1):
        self.tokens = torch.stack([token_ids(tokenizer, class_wordings.captions(label))
                                   for label in range(class_wordings.num_classes)])
        self.dropout = CaptionDropout(token_ids(tokenizer, [""])[0], dropout)

    def __call__(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Token ids (B, L) for digit ``labels`` (B,), drawn from ``generator``."""
        choice = torch.randint(self.tokens.shape[1], (len(labels),), generator=generator)
        return self.dropout(self.tokens[labels, choice], generator)
