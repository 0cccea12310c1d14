"""EraseDiff's parts: BOME's lambda rule on hand-made gradients, forget targets, fixed lambda, logging."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion.splits import ForgetSpec, ForgetTask
from unlearn import EraseDiff
from unlearn.erasediff import DEFAULT_ETA_CLASS, DEFAULT_ETA_SAMPLES, bome_multiplier
from unlearn.losses import other_class_labels

from .conftest import tiny_model


def grads(*vectors):
    """A 'gradient' split over two parameter tensors, as the optimizer sees it."""
    vector = torch.tensor(vectors, dtype=torch.float32)
    return [vector[:2], vector[2:]]


def test_lambda_for_orthogonal_gradients_is_eta():
    assert bome_multiplier(grads(1, 0, 0), grads(0, 2, 0), eta=0.7) == pytest.approx(0.7)


def test_lambda_for_opposed_gradients_adds_the_conflict():
    # g_r = -g_f: lambda must cancel g_r and still descend q at rate eta
    assert bome_multiplier(grads(-1, -2, 3), grads(1, 2, -3), eta=0.5) == pytest.approx(1.5)
    assert bome_multiplier(grads(-3, 0, 0), grads(1, 0, 0), eta=1.0) == pytest.approx(4.0)


def test_lambda_for_aligned_gradients_is_clipped_at_zero():
    # g_r already decreases q faster than required: no extra push
    assert bome_multiplier(grads(2, 0, 0), grads(1, 0, 0), eta=1.0) == 0.0
    assert bome_multiplier(grads(1, 1, 0), grads(1, 1, 0), eta=1.5) == pytest.approx(0.5)


def test_lambda_with_a_vanishing_forget_gradient_is_zero():
    assert bome_multiplier(grads(1, 2, 3), grads(0, 0, 0), eta=1.0) == 0.0


def test_update_direction_descends_q_at_rate_eta():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        g_r, g_f = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
        eta = 0.3
        lam = bome_multiplier([g_r], [g_f], eta)
        rate = torch.dot(g_f, g_r + lam * g_f).item()
        assert rate >= eta * g_f.dot(g_f).item() - 1e-5
        if lam > 0:
            assert rate == pytest.approx(eta * g_f.dot(g_f).item(), rel=1e-4)


@pytest.fixture(scope="module")
def task(digits, splits):
    return ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(3,)))


def test_curves_are_logged_per_step(task):
    result = EraseDiff(steps=5, batch_size=16).unlearn(tiny_model(), task, quiet=True)
    assert set(result.curves) == {"loss_retain", "loss_forget", "q", "lambda", "cos_grad"}
    assert all(len(v) == 5 for v in result.curves.values())
    assert all(v >= 0 for v in result.curves["lambda"])
    assert all(-1 <= v <= 1 for v in result.curves["cos_grad"])
    assert all(math.isfinite(v) for v in result.curves["q"])


def test_fixed_lambda_is_used(task):
    result = EraseDiff(steps=3, batch_size=16, fixed_lambda=0.25).unlearn(tiny_model(), task, quiet=True)
    assert result.curves["lambda"] == [0.25] * 3
    assert result.params["fixed_lambda"] == 0.25


def test_inner_steps_find_a_lower_forget_loss(task):
    result = EraseDiff(steps=4, batch_size=16, inner_steps=3, inner_lr=0.05).unlearn(tiny_model(), task,
                                                                                       quiet=True)
    assert all(q > 0 for q in result.curves["q"])  # f_hat, after descent on L_f, lies below L_f(theta)
    no_inner = EraseDiff(steps=4, batch_size=16, inner_steps=0).unlearn(tiny_model(), task, quiet=True)
    assert no_inner.curves["q"] == [0.0] * 4


def test_relabel_target_differs_from_uniform(task):
    model = tiny_model()
    uniform = EraseDiff(steps=3, batch_size=16, forget_target="uniform").unlearn(model, task, quiet=True)
    relabel = EraseDiff(steps=3, batch_size=16, forget_target="relabel").unlearn(model, task, quiet=True)
    assert uniform.model.fingerprint() != relabel.model.fingerprint()
    # the relabel loss compares two predictions of the same model: far below the uniform target's loss at start
    assert relabel.curves["loss_forget"][0] < uniform.curves["loss_forget"][0]


def test_other_labels_avoid_the_forgotten_and_the_own_class():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 3, 5, 7] * 50)
    allowed = [c for c in range(10) if c != 3]
    others = other_class_labels(labels, allowed, generator)
    assert not (others == 3).any() and not (others == labels).any()
    assert set(others.tolist()) == set(allowed) - set()  # every allowed class is drawn


def test_default_rate_depends_on_the_kind_of_deletion(digits, splits, task):
    images_only = ForgetTask.from_spec(digits, splits, ForgetSpec(sample_ids=tuple(splits.members[:5])))
    assert EraseDiff().rate(task) == DEFAULT_ETA_CLASS and EraseDiff().rate(images_only) == DEFAULT_ETA_SAMPLES
    assert DEFAULT_ETA_SAMPLES < DEFAULT_ETA_CLASS
    assert EraseDiff(eta=0.3).rate(images_only) == 0.3
    # same seed, same first gradients: BOME's lambda = max(eta - <g_r, g_f> / ||g_f||^2, 0) grows with eta
    gentle = EraseDiff(steps=2, batch_size=16, eta=0.01).unlearn(tiny_model(), task, quiet=True)
    strong = EraseDiff(steps=2, batch_size=16, eta=5.0).unlearn(tiny_model(), task, quiet=True)
    assert strong.curves["lambda"][0] > gentle.curves["lambda"][0]
