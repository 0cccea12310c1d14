"""An attacker's class embedding kept up to date during unlearning, so the erasure must hold against it too.

Embedding inversion (the audit's resurrection probe, after Pham et al., "Circumventing Concept Erasure Methods for
Text-to-Image Generative Models", ICLR 2024) finds a new conditioning under which an erased class comes back. Here
the attacker's row is fitted alongside the unlearning, one Adam step per unlearning step on the forget images
(adversarial unlearning in the manner of Zhang et al., "Defensive Unlearning with Adversarial Training for Robust
Concept Erasure in Diffusion Models", NeurIPS 2024), and the forget loss is also applied under it.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from accelerate import Accelerator

from diffusion.model import DiffusionModel


class AdversarialEmbedding:
    """One class-embedding vector (D,) that the attacker fits to bring the forget images back.

    Args:
        model: the class-conditional model being unlearned (its class embedding is a lookup table).
        lr: the attacker's Adam rate (the audit's embedding inversion uses 0.1).
    """

    def __init__(self, model: DiffusionModel, lr: float = 0.1):
        table = model.unet.class_embedding.weight.detach()
        self.vector = torch.nn.Parameter(table.mean(0).clone())
        self.optimizer = torch.optim.Adam([self.vector], lr=lr)

    @contextmanager
    def conditioning(self, model: DiffusionModel, vector: torch.Tensor):
        """Within the block, every class label given to ``model`` reads ``vector`` (D,) instead of its row."""
        handle = model.unet.class_embedding.register_forward_hook(
            lambda module, args, output: vector.expand_as(output))
        try:
            yield
        finally:
            handle.remove()

    def attack_step(self, model: DiffusionModel, x0: torch.Tensor, labels: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor, accelerator: Accelerator | None = None) -> float:
        """One Adam step of the vector on the DDPM loss of x0 (B, C, H, W) at t (B,) with noise; the model's
        weights get no gradient. The gradient is averaged over the processes of a launch (each holds its share of
        the batch), so the vector stays the same on all. Returns the loss before the step."""
        with self.conditioning(model, self.vector):
            loss = model.denoising_loss(x0, labels, t, noise).mean()
        (grad,) = torch.autograd.grad(loss, [self.vector])
        launched = accelerator is not None and accelerator.num_processes > 1
        self.vector.grad = accelerator.reduce(grad, reduction="mean") if launched else grad
        self.optimizer.step()
        return loss.item()
