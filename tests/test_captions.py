"""Captions of the bundled digits and the project's own CLIP tokenizer (the first part of text-to-image support)."""

from __future__ import annotations

import pytest
from transformers import CLIPTokenizer

from diffusion.captions import DIGIT_WORDS, HELDOUT_TEMPLATES, MAX_TOKENS, TRAIN_TEMPLATES, build_tokenizer, captions

ALL = [c for label in range(10) for c in captions(label) + captions(label, HELDOUT_TEMPLATES)]


def test_training_and_heldout_wordings_differ_and_name_the_digit():
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    for label, word in enumerate(DIGIT_WORDS):
        for text in captions(label) + captions(label, HELDOUT_TEMPLATES):
            assert word in text.split() or str(label) in text.split()
    with pytest.raises(ValueError, match=r"digit label must be in 0\.\.9; got 10"):
        captions(10)


def test_every_caption_word_is_one_token_and_other_text_still_tokenizes(tmp_path):
    tokenizer = build_tokenizer(ALL)
    for text in ALL:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
        assert tokens == ["<|startoftext|>", *(w + "</w>" for w in text.split()), "<|endoftext|>"]
    unknown = tokenizer.convert_ids_to_tokens(tokenizer("a zebra").input_ids)
    assert unknown[:2] == ["<|startoftext|>", "a</w>"] and "".join(unknown[2:-1]) == "zebra</w>"
    padded = tokenizer(ALL[:3], padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids
    assert {len(ids) for ids in padded} == {MAX_TOKENS}
    tokenizer.save_pretrained(tmp_path / "tokenizer")  # the folder Stable Diffusion's pipelines hold
    again = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert [again(t).input_ids for t in ALL] == [tokenizer(t).input_ids for t in ALL]


def test_tokenizer_refuses_characters_it_has_no_token_for():
    with pytest.raises(ValueError, match="captions may hold only letters and digits; got '!'"):
        build_tokenizer(["a digit!"])
