"""Membership inference on (image, caption) pairs of a text-to-image model: the image attacks conditioned on the
caption, and CLiD, on a tiny text model trained far too long on 64 captioned digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS
from attacks.clid import drop_words
from attacks.metrics import membership_metrics
from diffusion.errors import UsageError
from diffusion.text_model import captioned
from diffusion.training import TrainConfig, train_denoiser

from .conftest import tiny_model
from .test_text_model import tiny_text_model

# Measured on the overfit text model (64 members vs 64 unseen): loss 0.996, pia 0.995, clid 0.884.
MIN_MEMBER_AUC = {"loss": 0.9, "pia": 0.9, "clid": 0.8}


@pytest.fixture(scope="module")
def overfit(digits):
    """A tiny text model trained far too long on 64 captioned digits, and two disjoint captioned unseen sets."""
    order = np.random.default_rng(0).permutation(len(digits))
    # (16, 32) channels and 1000 timesteps, as the image attacks' overfit model: at (8, 16) PIA comes out inverted
    model = tiny_text_model(seed=1, widths=(16, 32), timesteps=1000)
    members, unseen_a, unseen_b = (captioned(digits.select(order[i : i + 64]), model, digits, 0)
                                   for i in (0, 1000, 1400))
    config = TrainConfig(steps=500, batch_size=64, lr=3e-3, ema_decay=0.99, seed=1)
    train_denoiser(model, members.images, members.labels, config, quiet=True, conditions=model.training_conditions(0.1))
    return model, members, unseen_a, unseen_b


@pytest.mark.parametrize("name", sorted(MIN_MEMBER_AUC))
def test_caption_conditioned_attacks_find_the_members(overfit, name):
    model, members, unseen_a, unseen_b = overfit
    attack = ATTACKS.make(name)
    member, a, b = (attack.score(model, s, seed=0).scores for s in (members, unseen_a, unseen_b))
    separated = membership_metrics(member, a, n_bootstrap=300)
    assert separated["auc"] > MIN_MEMBER_AUC[name], separated["auc"]
    null = membership_metrics(a, b, n_bootstrap=300)
    assert null["auc_ci"][0] < 0.5 < null["auc_ci"][1], null["auc"]


def test_clid_is_seeded_batch_size_invariant_and_text_only(overfit, digits):
    model, members, *_ = overfit
    small = ATTACKS.make("clid", batch_size=5).score(model, members.take(slice(0, 12)), seed=2).scores
    large = ATTACKS.make("clid", batch_size=64).score(model, members.take(slice(0, 12)), seed=2).scores
    np.testing.assert_allclose(small, large, rtol=1e-4, atol=1e-6)
    with pytest.raises(UsageError, match="clid scores \\(image, caption\\) pairs of a text-to-image model"):
        ATTACKS.make("clid").score(tiny_model(), digits.select(np.arange(3)))


def test_dropped_words_keep_the_start_and_padding_and_follow_the_seed():
    model = tiny_text_model()
    tokens = model.tokenize(["a picture of the digit three", "a picture of the digit three"])
    pad = model.tokenizer.pad_token_id
    first = drop_words(tokens, [7, 8], seed=0, pad=pad)
    assert torch.equal(first, drop_words(tokens, [7, 8], seed=0, pad=pad))
    assert not torch.equal(first[0], first[1])  # another sample id, another choice of words
    assert bool((first[:, 0] == tokens[:, 0]).all()) and bool((first[tokens == pad] == pad).all())
    kept = (first != pad).sum(1) - 1
    assert bool((kept < (tokens != pad).sum(1) - 1).any())
