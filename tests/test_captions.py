"""Captions of the bundled digits and the project's own CLIP tokenizer (the first part of text-to-image support)."""

from __future__ import annotations

import pytest
from transformers import CLIPTokenizer

from diffusion.captions import (
    DIGIT_CAPTIONS,
    DIGIT_WORDS,
    HELDOUT_TEMPLATES,
    MAX_TOKENS,
    TRAIN_TEMPLATES,
    build_tokenizer,
    class_captions,
)

ALL = DIGIT_CAPTIONS.every_caption()


def test_training_and_heldout_wordings_differ_and_name_the_digit():
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    for label, word in enumerate(DIGIT_WORDS):
        for text in DIGIT_CAPTIONS.captions(label) + DIGIT_CAPTIONS.captions(label, HELDOUT_TEMPLATES):
            assert word in text.split() or str(label) in text.split()
    with pytest.raises(ValueError, match=r"class label must be in 0\.\.9; got 10"):
        DIGIT_CAPTIONS.captions(10)


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


def test_a_folder_is_captioned_by_its_class_names():
    """Classes named 0..9 are the digits; any other folder's classes are worded by name, and prompts name them."""
    assert class_captions([str(d) for d in range(10)]) is DIGIT_CAPTIONS
    assert class_captions([f"digit{d}" for d in range(10)]) is DIGIT_CAPTIONS
    assert class_captions([f"digit{d}" for d in range(3)]).names[2] == ("digit2",)
    wordings = class_captions(["cat", "golden_retriever", "Hot-Dog"])
    assert wordings.names == (("cat",), ("golden retriever",), ("hot dog",))
    assert wordings.captions(1)[0] == "a photo of a golden retriever"
    assert not set(wordings.train_templates) & set(wordings.heldout_templates)
    assert wordings.classes_named("A Golden Retriever, running") == {1}
    assert wordings.classes_named("a golden cat") == {0}  # a name counts only whole
    assert wordings.classes_named("a hot dog and a cat") == {0, 2} and not wordings.classes_named("a dog")
    assert DIGIT_CAPTIONS.classes_named("the number 3") == {3} and DIGIT_CAPTIONS.classes_named("three") == {3}
    tokenizer = build_tokenizer(wordings.every_caption())
    assert len(tokenizer.tokenize("a photo of a golden retriever")) == 6
