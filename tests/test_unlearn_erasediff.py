"""EraseDiff's parts: BOME's lambda rule on hand-made gradients, forget targets, fixed lambda, logging."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from diffusion.errors import UsageError
from diffusion.seeding import seeded_normal
from diffusion.splits import ForgetSpec, ForgetTask
from unlearn import EraseDiff
from unlearn.erasediff import DEFAULT_ETA_CLASS, DEFAULT_ETA_SAMPLES, bome_multiplier
from unlearn.losses import MembershipGap, membership_gap, membership_matching_loss, other_class_labels

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


def test_value_barrier_asks_for_a_rate_proportional_to_q():
    # phi = eta * q instead of eta * ||g_q||^2: orthogonal gradients give lambda = eta * q / ||g_q||^2
    assert bome_multiplier(grads(1, 0, 0), grads(0, 2, 0), eta=0.5, q=0.8) == pytest.approx(0.5 * 0.8 / 4)
    # a met constraint (q <= 0) only cancels the conflict, never pushes further
    assert bome_multiplier(grads(-1, 0, 0), grads(1, 0, 0), eta=0.5, q=-0.1) == pytest.approx(1 - 0.05)
    assert bome_multiplier(grads(1, 0, 0), grads(1, 0, 0), eta=0.5, q=-0.1) == 0.0


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


def test_inner_steps_do_not_change_the_model_under_the_gradient_barrier(task):
    """BOME's default barrier does not depend on f_hat, so K inner steps only change the logged q."""
    with_inner = EraseDiff(steps=3, batch_size=16, inner_steps=2, inner_lr=0.05).unlearn(tiny_model(), task,
                                                                                          quiet=True)
    without = EraseDiff(steps=3, batch_size=16, inner_steps=0, batched_forward=False).unlearn(tiny_model(), task,
                                                                                             quiet=True)
    assert with_inner.model.fingerprint() == without.model.fingerprint()
    assert with_inner.curves["lambda"] == without.curves["lambda"]
    valued = EraseDiff(steps=3, batch_size=16, inner_steps=2, inner_lr=0.05, barrier="value", eta=5.0)
    assert valued.unlearn(tiny_model(), task, quiet=True).model.fingerprint() != without.model.fingerprint()
    with pytest.raises(UsageError, match="barrier 'value' needs inner_steps >= 1"):
        EraseDiff(barrier="value").unlearn(tiny_model(), task, quiet=True)


def test_one_stacked_forward_takes_the_steps_of_two_forwards(task):
    """The forget and remain losses from one forward over both batches: the same random numbers, losses and
    lambdas as two forwards, and the same function up to floating-point summation order."""
    runs = {batched: EraseDiff(steps=4, batch_size=16, batched_forward=batched).unlearn(tiny_model(), task, quiet=True)
            for batched in (True, False)}
    for key in ("loss_forget", "loss_retain", "lambda", "cos_grad"):
        assert runs[True].curves[key] == pytest.approx(runs[False].curves[key], rel=1e-4, abs=1e-6), key
    assert runs[True].curves["q"] == runs[False].curves["q"] == [0.0] * 4
    x = seeded_normal(0, range(8), (1, 8, 8), stream="test")
    t, labels = torch.full((8,), 500), torch.arange(8) % 10
    with torch.no_grad():
        batched, separate = (runs[b].model.predict_noise(x, t, labels) for b in (True, False))
        moved = (batched - tiny_model().predict_noise(x, t, labels)).abs().max()
    assert (batched - separate).abs().max() < 1e-3 * moved


def test_matching_target_is_zero_where_the_model_is_the_original_and_there_is_no_gap(task):
    model = tiny_model()
    flat = MembershipGap(torch.tensor([10.0, 50.0]), torch.ones(3))
    loss = membership_matching_loss(model, model, flat, task.forget.take(slice(0, 8)), torch.Generator())
    assert loss().item() == pytest.approx(0.0, abs=1e-6)
    assert flat.at(torch.tensor([0, 10, 49, 50, 99])).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]
    gap = membership_gap(model, task.retain, task.retain.take(slice(0, 30)), torch.Generator().manual_seed(0))
    assert gap.ratios.shape == (12,) and torch.isfinite(gap.ratios).all()
    assert gap.band(torch.tensor([0, 99])).tolist() == [0, len(gap.edges)]


def test_match_target_needs_nonmembers_and_leaves_the_input_alone(digits, splits):
    samples = ForgetTask.from_spec(digits, splits, ForgetSpec(sample_ids=tuple(int(i) for i in splits.members[:20])))
    with pytest.raises(UsageError, match="forget_target 'match' needs non-member images"):
        EraseDiff(forget_target="match").unlearn(tiny_model(), samples, quiet=True)
    model = tiny_model()
    fingerprint = model.fingerprint()
    result = EraseDiff(steps=3, batch_size=16, forget_target="match").unlearn(
        model, replace(samples, nonmembers=digits.select(splits.heldout[:60])), quiet=True)
    assert model.fingerprint() == fingerprint != result.model.fingerprint()
    assert len(result.curves["loss_forget"]) == 3


def test_matching_loss_drives_the_forget_loss_to_the_gap(task):
    """Minimising the matching loss alone with a gap of 2 roughly doubles the forget images' loss."""
    original, model = tiny_model(), tiny_model()
    gap = MembershipGap(torch.tensor([10.0, 50.0]), torch.full((3,), 2.0))
    forget = task.forget.take(slice(0, 32))
    noise = seeded_normal(0, forget.ids.tolist(), forget.images.shape[1:], "test")
    t = torch.arange(len(forget)) * 3

    def mean_loss(m):
        with torch.no_grad():
            return m.denoising_loss(forget.images, forget.labels, t, noise).mean().item()

    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        optimizer.zero_grad()
        membership_matching_loss(model, original, gap, forget, generator)().backward()
        optimizer.step()
    assert 1.5 < mean_loss(model) / mean_loss(original) < 2.5  # measured 2.00


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


def test_repair_phase_trains_on_the_remaining_data_after_the_erasure(task):
    model = tiny_model()
    fingerprint = model.fingerprint()
    plain = EraseDiff(steps=2, batch_size=16).unlearn(model, task, quiet=True)
    repaired = EraseDiff(steps=2, batch_size=16, repair_steps=3).unlearn(model, task, quiet=True)
    assert model.fingerprint() == fingerprint
    assert repaired.steps == 5 and len(repaired.curves["repair_loss_retain"]) == 3
    assert repaired.curves["loss_forget"] == plain.curves["loss_forget"]  # the same erasure, then the repair
    assert repaired.model.fingerprint() != plain.model.fingerprint()
    assert repaired.params["repair_steps"] == 3 and repaired.method == "erasediff"
