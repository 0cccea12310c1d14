"""Visual-context probe: give the model a partly noised image of the erased concept and let it finish the image.

After the visual-context probing (diffusion completion) of Lu, Kriplani, Gandikota, Pham, Bau, Hegde, Cohen, "When Are
Concepts Erased From Diffusion Models?", NeurIPS 2025 (arXiv 2505.17013): no prompt is searched; the trajectory
starts part-way, from a held-out image of the concept noised to timestep t = ``strength`` x the schedule, and the model
denoises it (deterministic DDIM, the audit's number of steps scaled by ``strength``). An erasure that only steers the
text conditioning away from the concept (guidance-based avoidance, in the paper's words) finishes the concept from the
visual context; one that removed it paints something else.

The model is conditioned on the concept prompt (a text model, with the sampler's classifier-free guidance) or on the
erased class label (a class-conditional one): the request the erasure was trained to refuse, so the probe measures
whether visual context overrides the refusal; under the empty prompt every model, the never-trained references too,
would largely keep what the noised image shows, and the probe would measure the noise level instead of the erasure.

Pairing: output j denoises held-out image ``j mod N`` with the noise of (seed, j), both fixed before any model is
seen, so every model denoises the same inputs and the per-image outcomes pair across models. They do NOT pair with
the prompt probes' outputs j (those start from the class's evaluation noises), so the worst-of check leaves them out.
"""

from __future__ import annotations

from numbers import Real

import torch
from diffusers import DDIMScheduler

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.params import Interval, validate_params
from diffusion.seeding import seeded_normal
from diffusion.text_model import DEFAULT_GUIDANCE

from .regeneration import POSITIVE_INT, ResurrectionResult, judge_generated

DEFAULT_STRENGTH = 0.5  # the share of the schedule the images are noised to


def trajectory_timesteps(model: DiffusionModel, strength: float, sample_steps: int) -> torch.Tensor:
    """The DDIM timesteps (descending) of the last ``round(sample_steps * strength)`` (at least one) of a
    ``sample_steps``-step schedule: the first is the timestep the images are noised to."""
    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(sample_steps)
    kept = max(1, round(sample_steps * strength))
    return scheduler.timesteps[len(scheduler.timesteps) - kept:]


@torch.no_grad()
def complete_images(model: DiffusionModel, x0: torch.Tensor, condition: torch.Tensor, *, seed: int,
                    ids: list[int], strength: float, sample_steps: int, batch_size: int = 256) -> torch.Tensor:
    """``x0`` (B, C, H, W; the diffusion's data) noised to the first of :func:`trajectory_timesteps` with the noise
    of (seed, ids[i]), then denoised by deterministic DDIM under ``condition`` (token ids (L,) of a text model, with
    its classifier-free guidance; a class id (0-d) of a class-conditional model): images (B, C, H, W) in [-1, 1]
    on the CPU (pixels: a VAE model's latents are decoded)."""
    timesteps = trajectory_timesteps(model, strength, sample_steps)
    scheduler = DDIMScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(sample_steps)
    text = model.conditioning == "text"
    was_training = model.unet.training
    model.unet.eval()
    out = []
    for start in range(0, len(x0), batch_size):
        batch = x0[start:start + batch_size].to(model.device)
        noise = seeded_normal(seed, ids[start:start + batch_size], batch.shape[1:], stream="noise-trajectory")
        x = model.add_noise(batch, noise.to(model.device), timesteps[:1].expand(len(batch)).to(model.device))
        for t in timesteps:
            if text:
                eps = model.guided_noise(x, t, condition.expand(len(x), -1), DEFAULT_GUIDANCE)
            else:
                eps = model.predict_noise(x, t.expand(len(x)).to(model.device),
                                          condition.expand(len(x)).to(model.device))
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        out.append(model.decode(x) if text else x.clamp(-1, 1).cpu())
    model.unet.train(was_training)
    return torch.cat(out)


def noise_trajectory(
    model: DiffusionModel,
    judge: Judge,
    images: LabeledImages,
    concept_class: int,
    forget_pixels: LabeledImages,
    *,
    condition: torch.Tensor | None = None,
    strength: float = DEFAULT_STRENGTH,
    seed: int = 0,
    num_images: int = 50,
    sample_steps: int = 50,
) -> ResurrectionResult:
    """``num_images`` completions (:func:`complete_images`) of the held-out ``images`` of the concept (cycled; the
    diffusion's data, latents for a VAE model), judged as ``concept_class``. ``condition``: token ids (L,) of the
    concept prompt for a text model (required there); a class-conditional model is conditioned on ``concept_class``.
    ``model`` is never changed."""
    validate_params({"num_images": POSITIVE_INT, "sample_steps": POSITIVE_INT,
                     "strength": [Interval(Real, 0, 1, closed="right")]},
                    {"num_images": num_images, "sample_steps": sample_steps, "strength": strength},
                    "noise_trajectory")
    if len(images) == 0:
        raise UsageError("the noise-trajectory probe needs images of the concept; got none")
    if tuple(images.images.shape[1:]) != tuple(model.image_shape):
        raise UsageError(f"the noise-trajectory probe got images of shape {tuple(images.images.shape[1:])}; the "
                         f"model diffuses {tuple(model.image_shape)}")
    if model.conditioning == "text":
        if condition is None or condition.ndim != 1:
            raise UsageError("the noise-trajectory probe of a text model needs the concept prompt's token ids (L,)")
    else:
        model.require_class_conditioning("the noise-trajectory probe")
        condition = torch.tensor(int(concept_class))
    index = torch.arange(num_images)
    ids = [int(concept_class) * 100_000 + j for j in range(num_images)]
    completed = complete_images(model, images.images[index % len(images)], condition, seed=seed, ids=ids,
                                strength=strength, sample_steps=sample_steps)
    target = torch.full((num_images,), int(concept_class))
    metrics = judge_generated(judge, completed, target, forget_pixels)
    start = int(trajectory_timesteps(model, strength, sample_steps)[0])
    metrics.update(strength=strength, start_timestep=start, source_image_ids=images.ids[index % len(images)].tolist(),
                   classes=[int(concept_class)], per_class_images=num_images, sampler=f"ddim-{sample_steps}",
                   seed=seed)
    return ResurrectionResult("noise_trajectory", completed, target, metrics)
