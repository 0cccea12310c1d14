"""The fitting loop shared by the attacks that learn a text model's input on images of a concept (a new word, an
adversarial prompt): the frozen model's DDPM loss under one prompt, minimised over what the optimizer holds."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from diffusion.text_model import TextDiffusionModel


def fit_prompt(
    probe: TextDiffusionModel,
    x0: torch.Tensor,
    prompt: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    desc: str,
    quiet: bool = True,
) -> tuple[float, float]:
    """``steps`` optimizer steps on the DDPM loss of ``x0`` (N, C, H, W; on the model's device) under the token ids
    ``prompt`` (L,), with images, timesteps and noises drawn from ``generator``. Returns the loss of one fixed draw
    of 256 (image, t, noise) before and after, to show the fit."""
    prompt = prompt.to(probe.device)

    def draw(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, len(x0), (size,), generator=generator)
        t = torch.randint(0, probe.num_train_timesteps, (size,), generator=generator)
        return pick, t.to(probe.device), torch.randn((size, *x0.shape[1:]), generator=generator).to(probe.device)

    def loss_on(pick: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return probe.denoising_loss(x0[pick], prompt.expand(len(pick), -1), t, noise).mean()

    check = draw(256)
    with torch.no_grad():
        before = loss_on(*check).item()
    for _ in tqdm(range(steps), desc=desc, disable=quiet, leave=False):
        loss = loss_on(*draw(batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on(*check).item()
    return before, after
