"""Captions for the bundled digits and the tokenizer the project builds for them (nothing downloaded).

A text-to-image model of the digits is trained on several paraphrases per class and judged on paraphrases it never
saw, so that erasing "three" is tested on wordings the erasure did not use either. The tokenizer is a CLIP BPE
tokenizer (``transformers.CLIPTokenizer``, the class Stable Diffusion's folders hold) whose vocabulary makes every
word of the captions one token; any other text falls back to single characters. It is saved and loaded like SD's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import CLIPTokenizer

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {word}: the digit's name; {digit}: the numeral. Training and held-out wordings share no template.
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
START, END = "<|startoftext|>", "<|endoftext|>"
CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_TOKENS = 16  # the longest caption has 8 words: room for paraphrases and attack tokens


def captions(label: int, templates: Sequence[str] = TRAIN_TEMPLATES) -> list[str]:
    """Every wording of ``templates`` for the digit ``label`` (0-9)."""
    if not 0 <= label < len(DIGIT_WORDS):
        raise ValueError(f"digit label must be in 0..9; got {label}")
    return [t.format(word=DIGIT_WORDS[label], digit=label) for t in templates]


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


class CaptionSampler:
    """A random caption per image for training: one of ``templates`` for the image's digit, then
    :class:`CaptionDropout` with probability ``dropout``. ``tokens[c, k]`` holds the token ids (L,) of template k
    for digit c."""

    def __init__(self, tokenizer: CLIPTokenizer, templates: Sequence[str] = TRAIN_TEMPLATES, dropout: float = 0.1):
        self.tokens = torch.stack([token_ids(tokenizer, captions(label, templates))
                                   for label in range(len(DIGIT_WORDS))])
        self.dropout = CaptionDropout(token_ids(tokenizer, [""])[0], dropout)

    def __call__(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Token ids (B, L) for digit ``labels`` (B,), drawn from ``generator``."""
        choice = torch.randint(self.tokens.shape[1], (len(labels),), generator=generator)
        return self.dropout(self.tokens[labels, choice], generator)
