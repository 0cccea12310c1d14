import json

import pytest
import torch

from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.training import TrainConfig, train_denoiser

from .conftest import TINY, tiny_model


def test_same_seed_same_weights():
    assert tiny_model(seed=3).fingerprint() == tiny_model(seed=3).fingerprint()
    assert tiny_model(seed=3).fingerprint() != tiny_model(seed=4).fingerprint()


def test_add_noise_matches_the_schedule(model):
    x0, noise = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 50, 99])
    ab = model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    assert torch.allclose(model.add_noise(x0, noise, t), expected, atol=1e-6)


def test_denoising_loss_is_per_sample(model, digits):
    x0, labels = digits.images[:5], digits.labels[:5]
    t, noise = torch.full((5,), 20), torch.randn(5, 1, 8, 8)
    loss = model.denoising_loss(x0, labels, t, noise)
    assert loss.shape == (5,)
    single = model.denoising_loss(x0[:1], labels[:1], t[:1], noise[:1])
    assert torch.allclose(loss[:1], single, atol=1e-6)


def test_conditioning_is_checked(model):
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(UsageError, match="class-conditional"):
        model.predict_noise(x, t, None)
    unconditional = tiny_model(num_classes=None)
    with pytest.raises(UsageError, match="unconditional"):
        unconditional.predict_noise(x, t, torch.zeros(2, dtype=torch.long))
    with pytest.raises(UsageError, match="needs a class-conditional model"):
        unconditional.require_class_conditioning("this attack")


def test_sampling_is_seeded_and_batch_size_invariant(model):
    labels = torch.arange(10)
    a = model.sample(labels, seed=1, steps=5, batch_size=64)
    b = model.sample(labels, seed=1, steps=5, batch_size=3)
    assert a.shape == (10, 1, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, model.sample(labels, seed=2, steps=5))
    ddpm = model.sample(labels[:2], seed=1, method="ddpm")
    assert ddpm.shape == (2, 1, 8, 8)
    assert torch.allclose(ddpm, model.sample(labels[:2], seed=1, method="ddpm", batch_size=1), atol=1e-5)


def test_copy_is_independent(model):
    clone = model.copy()
    with torch.no_grad():
        next(clone.unet.parameters()).add_(1.0)
    assert clone.fingerprint() != model.fingerprint()


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "m", {"role": "test"})
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "m" / "model_index.json").is_file()
    loaded = DiffusionModel.load(tmp_path / "m", device="cpu")
    x, t, c = torch.randn(3, 1, 8, 8), torch.tensor([1, 50, 99]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        assert torch.equal(model.predict_noise(x, t, c), loaded.predict_noise(x, t, c))
    assert loaded.fingerprint() == model.fingerprint()
    assert DiffusionModel.read_metadata(tmp_path / "m")["role"] == "test"
    assert loaded.num_train_timesteps == TINY["num_train_timesteps"]


def test_load_hub_format_directory(model, tmp_path):
    """A folder laid out like a hub DDPM pipeline (model_index.json, unet/, scheduler/) loads by path."""
    model.save(tmp_path / "ddpm-like")
    (tmp_path / "ddpm-like" / "erasediff.json").unlink()
    index = json.loads((tmp_path / "ddpm-like" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    loaded = DiffusionModel.load(str(tmp_path / "ddpm-like"), device="cpu")
    assert loaded.fingerprint() == model.fingerprint()
    assert DiffusionModel.read_metadata(tmp_path / "ddpm-like") == {}


def test_load_errors(tmp_path, model):
    with pytest.raises(UsageError, match="not found"):
        DiffusionModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a diffusers model folder"):
        DiffusionModel.load(tmp_path / "empty")
    # a pickled checkpoint is refused: only safetensors are read
    model.save(tmp_path / "pickled")
    weights = tmp_path / "pickled" / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(model.unet.state_dict(), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(UsageError, match="could not load model"):
        DiffusionModel.load(tmp_path / "pickled")


def test_training_is_deterministic_and_learns(digits, splits):
    config = TrainConfig(steps=30, batch_size=32, seed=5, **TINY)
    x, y = digits.images[splits.members], digits.labels[splits.members]
    runs = []
    for _ in range(2):
        model = tiny_model(seed=5)
        record = train_denoiser(model, x, y, config, quiet=True)
        runs.append(model.fingerprint())
    assert runs[0] == runs[1]
    assert record.steps == 30 and len(record.loss_curve) == 3
    assert record.loss_curve[-1] < record.loss_curve[0]


def test_a_snapshot_is_the_model_a_shorter_run_returns(digits, splits):
    """With a constant learning rate, the EMA snapshot after k steps of a long run equals a k-step run's model."""
    x, y = digits.images[splits.members], digits.labels[splits.members]
    snapshots = {}
    long = tiny_model(seed=5)
    train_denoiser(long, x, y, TrainConfig(steps=12, batch_size=32, seed=5, **TINY), quiet=True,
                   snapshot_steps={4, 12}, on_snapshot=lambda step, model: snapshots.update({step: model}))
    short = tiny_model(seed=5)
    train_denoiser(short, x, y, TrainConfig(steps=4, batch_size=32, seed=5, **TINY), quiet=True)
    assert sorted(snapshots) == [4, 12]
    assert snapshots[4].fingerprint() == short.fingerprint() != snapshots[12].fingerprint()
    assert snapshots[12].fingerprint() == long.fingerprint()
