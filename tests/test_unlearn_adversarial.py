"""The attacker's embedding that adversarial EraseDiff trains against: conditioning, attack steps, the method."""

from __future__ import annotations

import pytest
import torch

from diffusion.errors import UsageError
from diffusion.splits import ForgetSpec, ForgetTask
from unlearn import EraseDiff
from unlearn.adversarial_embedding import AdversarialEmbedding

from .conftest import tiny_model


@pytest.fixture(scope="module")
def task(digits, splits):
    return ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(3,)))


def test_conditioning_reads_the_vector_instead_of_the_row(task):
    model = tiny_model()
    adversary = AdversarialEmbedding(model)
    vector = torch.randn_like(adversary.vector)
    x, t, labels = task.forget.images[:6], torch.arange(6) * 10, task.forget.labels[:6]
    with torch.no_grad():
        with adversary.conditioning(model, vector):
            hooked = model.predict_noise(x, t, labels)
        written = model.copy()
        written.unet.class_embedding.weight[3] = vector
        expected = written.predict_noise(x, t, labels)
        assert torch.allclose(hooked, expected, atol=1e-6)
        assert not torch.allclose(model.predict_noise(x, t, labels), hooked)  # the hook is gone afterwards


def test_attack_steps_fit_the_vector_and_leave_the_weights_alone(task):
    model = tiny_model()
    fingerprint = model.fingerprint()
    adversary = AdversarialEmbedding(model, lr=0.05)
    generator = torch.Generator().manual_seed(0)
    x = task.forget.images[:32]
    t = torch.randint(0, model.num_train_timesteps, (32,), generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    losses = [adversary.attack_step(model, x, task.forget.labels[:32], t, noise) for _ in range(30)]
    assert losses[-1] < losses[0]
    assert model.fingerprint() == fingerprint
    assert all(p.grad is None for p in model.unet.parameters())


def test_erasediff_trains_against_the_adversary(task):
    plain = EraseDiff(steps=3, batch_size=16).unlearn(tiny_model(), task, quiet=True)
    robust = EraseDiff(steps=3, batch_size=16, adversarial_embedding=True).unlearn(tiny_model(), task, quiet=True)
    assert robust.model.fingerprint() != plain.model.fingerprint()
    assert robust.curves["loss_forget"][0] > plain.curves["loss_forget"][0]  # the adversary's term adds to L_f
    with pytest.raises(UsageError, match="adversarial_embedding works with forget_target 'relabel'; got 'uniform'"):
        EraseDiff(adversarial_embedding=True, forget_target="uniform").unlearn(tiny_model(), task, quiet=True)
