"""Extraction (Carlini et al. 2023) on real digits and a tiny model: planted copies are found, unseen data is not."""

import json

import numpy as np
import pytest
import torch

from attacks.extraction import extract_training_data, match_to_training
from diffusion.errors import UsageError

from .conftest import tiny_model


def test_planted_duplicates_are_found_and_unseen_digits_are_not(digits, splits):
    training = digits.select(splits.members)
    planted_ids = splits.members[[3, 50, 400, 401, 448]]
    copies = digits.images[planted_ids] + 0.02 * torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    unseen = digits.images[splits.heldout]  # all 1348 heldout digits, natural look-alikes included
    generated = torch.cat([copies, unseen])
    result = match_to_training(generated, training)
    assert result.extracted[:5].all()
    assert not result.extracted[5:].any()
    assert result.extracted_training_ids == sorted(planted_ids.tolist())
    generated_pairs, training_pairs = result.pairs()
    assert torch.equal(generated_pairs, copies) and torch.equal(training_pairs, digits.images[planted_ids])
    summary = result.to_dict()
    assert summary["num_extracted"] == 5 and summary["num_generated"] == 5 + len(splits.heldout)
    assert [c["training_id"] for c in summary["copies"]] == planted_ids.tolist()
    assert all(c["distance"] < 0.3 and c["relative_distance"] < 1 for c in summary["copies"])
    json.dumps(summary)
    # Carlini et al.'s CIFAR-10 alpha 0.5 would flag many natural look-alikes among 8x8 digits; the summary
    # reports it beside, with the same counts as a match run at that alpha
    at_paper = match_to_training(generated, training, alpha=0.5)
    assert at_paper.extracted[5:].sum() > 50
    assert summary["at_paper_alpha"] == {"alpha": 0.5, "num_extracted": int(at_paper.extracted.sum()),
                                         "num_training_images_extracted": len(at_paper.extracted_training_ids),
                                         "extracted_training_ids": at_paper.extracted_training_ids}


def test_absolute_ceiling_and_neighbourhood(digits, splits):
    training = digits.select(splits.members[:30])
    exact = digits.images[splits.members[:2]]
    result = match_to_training(exact, training, n_neighbors=500, max_distance=0.0)
    assert result.extracted.all() and result.params["n_neighbors"] == 30
    assert np.allclose(result.distances, 0)
    shifted = match_to_training(exact + 0.05, training, max_distance=0.1)
    assert not shifted.extracted.any()


def test_extraction_from_a_model(digits, splits):
    model = tiny_model()
    result = extract_training_data(model, digits.select(splits.members), [3, 5], per_class=4, steps=3)
    assert result.generated.shape == (8, 1, 8, 8)
    assert result.generated_labels.tolist() == [3] * 4 + [5] * 4
    summary = result.to_dict()
    assert set(summary["per_class"]) == {3, 5} and summary["params"]["classes"] == [3, 5]
    json.dumps(summary)
    unconditional = extract_training_data(tiny_model(num_classes=None), digits.select(splits.members[:60]),
                                          per_class=3, steps=2)
    assert unconditional.generated_labels.tolist() == [-1] * 3


def test_bad_input(digits, splits):
    training = digits.select(splits.members)
    with pytest.raises(UsageError, match="needs a class-conditional model"):
        extract_training_data(tiny_model(num_classes=None), training, [3], per_class=2, steps=2)
    with pytest.raises(UsageError, match="class 12 is out of range"):
        extract_training_data(tiny_model(), training, [12], per_class=2, steps=2)
    with pytest.raises(UsageError, match="empty training set"):
        match_to_training(digits.images[:2], digits.select(np.arange(0)))
    with pytest.raises(UsageError, match="'alpha' parameter"):
        match_to_training(digits.images[:2], training, alpha=0)
    with pytest.raises(UsageError, match="'per_class' parameter"):
        extract_training_data(tiny_model(), training, [3], per_class=0)
