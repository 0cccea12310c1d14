"""Resurrection probes: conditional regeneration and embedding inversion on tiny real models with a real judge."""

import json

import numpy as np
import pytest
import torch

from attacks.inversion import embedding_inversion
from attacks.regeneration import conditional_regeneration, judge_generated
from attacks.relearning import relearning_curve
from diffusion.errors import UsageError
from diffusion.splits import ForgetSpec

from .conftest import tiny_model


@pytest.fixture(scope="module")
def forget(digits, splits):
    return digits.select(ForgetSpec(classes=(3,)).forget_ids(digits.labels, splits))


def test_judge_generated_on_the_forget_images_themselves(judge, forget):
    metrics = judge_generated(judge, forget.images, forget.labels, forget)
    assert metrics["nn_distance_to_forget"] == 0.0
    assert metrics["judge_accuracy"] > 0.8 and metrics["mean_probability"] > 0.7
    assert metrics["per_class"][3]["num_images"] == len(forget)
    # judged against the wrong class, the same images score near zero
    wrong = judge_generated(judge, forget.images, torch.full((len(forget),), 8), forget)
    assert wrong["judge_accuracy"] < 0.1 and wrong["nn_distance_to_forget"] == 0.0


def test_conditional_regeneration(judge, forget):
    model = tiny_model()
    result = conditional_regeneration(model, judge, forget, [3], per_class=6, steps=3)
    assert result.images.shape == (6, 1, 8, 8) and result.target_classes.tolist() == [3] * 6
    summary = result.to_dict()
    assert summary["probe"] == "conditional_regeneration" and 0 <= summary["judge_accuracy"] <= 1
    assert summary["entropy"] > 0 and summary["nn_distance_to_forget"] > 0
    json.dumps(summary)
    again = conditional_regeneration(model, judge, forget, [3], per_class=6, steps=3)
    assert torch.equal(again.images, result.images)


def test_embedding_inversion_learns_a_new_row_and_leaves_the_model_alone(judge, forget):
    model = tiny_model()
    fingerprint = model.fingerprint()
    result = embedding_inversion(model, judge, forget, [3], per_class=4, images_per_class=4, steps=40, lr=0.1,
                                 batch_size=16, sample_steps=3)
    assert model.fingerprint() == fingerprint
    assert model.unet.class_embedding.num_embeddings == 10
    summary = result.to_dict()
    assert summary["fit_loss_after"] < summary["fit_loss_before"]
    assert len(summary["fit_ids_used"]) == 4 and set(summary["fit_ids_used"]) <= set(forget.ids.tolist())
    assert result.images.shape == (4, 1, 8, 8) and result.target_classes.tolist() == [3] * 4
    json.dumps(summary)
    again = embedding_inversion(model, judge, forget, [3], per_class=4, images_per_class=4, steps=40, lr=0.1,
                                batch_size=16, sample_steps=3)
    assert torch.equal(again.images, result.images)


def test_bad_input(judge, forget, digits):
    unconditional = tiny_model(num_classes=None)
    with pytest.raises(UsageError, match="conditional regeneration needs a class-conditional model"):
        conditional_regeneration(unconditional, judge, forget, [3], per_class=2, steps=2)
    with pytest.raises(UsageError, match="embedding inversion needs a class-conditional model"):
        embedding_inversion(unconditional, judge, forget, [3], per_class=2, steps=2)
    with pytest.raises(UsageError, match="class 10 is out of range"):
        conditional_regeneration(tiny_model(), judge, forget, [10], per_class=2, steps=2)
    with pytest.raises(UsageError, match="empty forget set"):
        conditional_regeneration(tiny_model(), judge, digits.select(np.arange(0)), [3], per_class=2)
    with pytest.raises(UsageError, match="class 4 needs images of that class"):
        embedding_inversion(tiny_model(), judge, forget, [4], per_class=2, steps=2)


def test_relearning_curve_is_seeded_and_leaves_the_model_alone(judge, forget):
    """The probe fine-tunes a copy on the erased class's images and judges samples at every checkpoint."""
    model = tiny_model()
    fingerprint = model.fingerprint()
    curve = relearning_curve(model, judge, forget.take(slice(0, 8)), [3], checkpoints=(5, 0, 2), lr=1e-2,
                             batch_size=4, per_class=6, sample_steps=3)
    assert model.fingerprint() == fingerprint
    assert curve.checkpoints == [0, 2, 5] and len(curve.judge_accuracy) == 3 and curve.num_images == 6
    assert all(0 <= a <= 1 for a in curve.judge_accuracy)
    assert curve.area == pytest.approx(np.mean(curve.judge_accuracy[1:]))
    assert curve.fit_ids == forget.ids[:8].tolist()
    # step 0 is the untouched model: the regeneration probe's accuracy with the same noises
    regenerated = conditional_regeneration(model, judge, forget, [3], per_class=6, steps=3)
    assert curve.judge_accuracy[0] == regenerated.to_dict()["judge_accuracy"]
    again = relearning_curve(model, judge, forget.take(slice(0, 8)), [3], checkpoints=(0, 2, 5), lr=1e-2,
                             batch_size=4, per_class=6, sample_steps=3)
    assert again.to_dict() == curve.to_dict()
    json.dumps(curve.to_dict())
    with pytest.raises(UsageError, match="needs a checkpoint after step 0"):
        relearning_curve(model, judge, forget, [3], checkpoints=(0,))
    with pytest.raises(UsageError, match="'lr' parameter of relearning_curve"):
        relearning_curve(model, judge, forget, [3], lr=0)
