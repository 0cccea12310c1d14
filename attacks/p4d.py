"""P4D: a prompt found by matching the erased model's noise predictions to the ORIGINAL model's, then transferred.

After Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by Finding Problematic Prompts",
ICML 2024 (P4D-N). The attacker holds the model before erasure: on noised images of the concept it records the
original's noise prediction under the concept prompt, then optimises a prompt of ``prompt_tokens`` tokens so that the
audited model's prediction under it matches. The prompt is kept as continuous embeddings and projected to the nearest
real token in every forward pass, the gradient going to the continuous embeddings (the projection P4D takes from Wen
et al., "Hard Prompts Made Easy", NeurIPS 2023), so the result is a prompt anyone can type. The audited model then
generates with the found prompt and the judge says whether the concept came back.

Here the noised images are the held-out images of the concept kept aside (P4D noises the original's own generations
of the concept prompt); the (image, timestep, noise) draws and the original's targets are computed once, a pool the
search draws its batches from, so one search step costs one forward and backward pass of the audited model, as the
adversarial prompt's does. Audited against itself, the original's found prompt only has to imitate the concept prompt.
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.params import Interval, validate_params
from diffusion.seeding import derive_seed
from diffusion.text_model import TextDiffusionModel

from .adversarial_prompt import word_tokens
from .prompt_fit import FoundPrompt, frozen_copy_reading, judge_prompt
from .regeneration import POSITIVE_INT, ResurrectionResult

EVALUATE_EVERY = 25  # search steps between two evaluations of the projected prompt on the check draws
CHECK_DRAWS = 64  # pool draws the projected prompt is evaluated on (the best one found is kept)


class ProjectedTokens(nn.Module):
    """A frozen token table (V, D) whose ids V..V+k-1 read ``k`` continuous embeddings ``soft`` (k, D), each projected
    in the forward pass to the nearest (cosine) of the whole-word tokens ``words``: ids (...) -> (..., D), the value
    of the projected rows, the gradient of the continuous ones."""

    def __init__(self, table: nn.Embedding, words: torch.Tensor, k: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("table", table.weight.detach().clone())
        self.register_buffer("words", words)
        start = words[torch.randint(len(words), (k,), generator=generator)]
        self.soft = nn.Parameter(self.table[start].clone())

    def tokens(self) -> torch.Tensor:
        """The projected prompt as real token ids (k,)."""
        similarity = F.normalize(self.soft.detach(), dim=1) @ F.normalize(self.table[self.words], dim=1).T
        return self.words[similarity.argmax(1)]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hard = self.table[self.tokens()]
        rows = self.soft + (hard - self.soft).detach()
        return F.embedding(ids, torch.cat([self.table, rows]))


def search_matching_prompt(
    model: TextDiffusionModel,
    original: TextDiffusionModel,
    images: LabeledImages,
    concept_prompt: str,
    *,
    seed: int = 0,
    prompt_tokens: int = 4,
    steps: int = 100,
    lr: float = 0.05,
    weight_decay: float = 0.1,
    batch_size: int = 32,
    pool_size: int = 256,
    quiet: bool = True,
) -> FoundPrompt:
    """A prompt of ``prompt_tokens`` real words minimising the mean squared difference between ``model``'s noise
    prediction under it and ``original``'s under ``concept_prompt``, on ``pool_size`` draws of (image of ``images``
    (N, C, H, W: the diffusion's data), timestep, noise) from the seed; AdamW (P4D's weight decay 0.1) on the
    continuous embeddings for ``steps`` batches of ``batch_size`` draws. Keeps the projected prompt with the lowest
    matching loss on the first :data:`CHECK_DRAWS` draws (the start included). Neither model is changed."""
    validate_params({"prompt_tokens": POSITIVE_INT, "steps": POSITIVE_INT, "batch_size": POSITIVE_INT,
                     "pool_size": POSITIVE_INT, "lr": [Interval(Real, 0, None, closed="neither")],
                     "weight_decay": [Interval(Real, 0, None)]},
                    {"prompt_tokens": prompt_tokens, "steps": steps, "batch_size": batch_size, "pool_size": pool_size,
                     "lr": lr, "weight_decay": weight_decay}, "search_matching_prompt")
    if len(images) == 0:
        raise UsageError("P4D needs images of the concept; got none")
    if original.image_shape != model.image_shape or original.num_train_timesteps != model.num_train_timesteps:
        raise UsageError(f"P4D needs the original model of the audited one; got one of shape "
                         f"{original.image_shape} and {original.num_train_timesteps} timesteps for "
                         f"{model.image_shape} and {model.num_train_timesteps}")
    empty = model.tokenize([""])[0]
    if prompt_tokens + 2 > len(empty):
        raise UsageError(f"{prompt_tokens} prompt tokens do not fit the tokenizer's {len(empty)} positions")
    generator = torch.Generator().manual_seed(derive_seed(seed, "p4d"))
    x0 = images.images
    pick = torch.randint(0, len(x0), (pool_size,), generator=generator)
    t = torch.randint(0, model.num_train_timesteps, (pool_size,), generator=generator)
    noise = torch.randn((pool_size, *x0.shape[1:]), generator=generator)
    concept = original.tokenize([concept_prompt]).to(original.device)
    x_t = original.add_noise(x0[pick].to(original.device), noise.to(original.device), t.to(original.device))
    was_training = original.unet.training
    original.unet.eval()
    with torch.no_grad():
        target = torch.cat([original.predict_noise(x_t[s:s + 256], t[s:s + 256].to(original.device),
                                                   concept.expand(len(x_t[s:s + 256]), -1))
                            for s in range(0, pool_size, 256)])
    original.unet.train(was_training)

    probe, table, projected = frozen_copy_reading(
        model, lambda table: ProjectedTokens(table, word_tokens(model.tokenizer), prompt_tokens, generator))
    slots = torch.arange(table.num_embeddings, table.num_embeddings + prompt_tokens)
    prompt = torch.cat([empty[:1], slots, empty[1:-prompt_tokens]]).to(probe.device)
    x_t, t, target = x_t.to(probe.device), t.to(probe.device), target.to(probe.device)

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        prediction = probe.predict_noise(x_t[rows], t[rows], prompt.expand(len(rows), -1))
        return F.mse_loss(prediction, target[rows])

    check = torch.arange(min(CHECK_DRAWS, pool_size))

    def evaluate() -> float:
        with torch.no_grad():
            return loss_on(check).item()

    start_loss = best_loss = evaluate()
    best = projected.tokens().cpu()
    optimizer = torch.optim.AdamW([projected.soft], lr=lr, weight_decay=weight_decay)
    for step in tqdm(range(1, steps + 1), desc="P4D prompt", disable=quiet, leave=False):
        loss = loss_on(torch.randint(0, pool_size, (batch_size,), generator=generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % EVALUATE_EVERY == 0 or step == steps:
            current = evaluate()
            if current < best_loss:
                best_loss, best = current, projected.tokens().cpu()
    found = torch.cat([empty[:1], best, empty[1:-prompt_tokens]])
    text = model.tokenizer.decode(found, skip_special_tokens=True)
    record = {"prompt": text, "concept_prompt": concept_prompt, "prompt_tokens": prompt_tokens, "steps": steps,
              "lr": lr, "weight_decay": weight_decay, "pool_size": pool_size,
              "match_loss_before": start_loss, "match_loss_after": best_loss}
    return FoundPrompt(found, text, record)


def p4d_attack(
    model: TextDiffusionModel,
    original: TextDiffusionModel,
    judge: Judge,
    images: LabeledImages,
    concept_prompt: str,
    concept_class: int,
    forget_pixels: LabeledImages,
    *,
    seed: int = 0,
    per_class: int = 50,
    sample_steps: int = 50,
    quiet: bool = True,
    **search_options,
) -> ResurrectionResult:
    """Search a prompt against ``original`` (:func:`search_matching_prompt`), generate ``per_class`` images with it
    on ``model`` (the noises of the class's evaluation samples, as the other probes) and judge them as
    ``concept_class``: images (per_class, C, H, W), ``per_image_correct`` paired with the other probes'."""
    validate_params({"per_class": POSITIVE_INT, "sample_steps": POSITIVE_INT},
                    {"per_class": per_class, "sample_steps": sample_steps}, "p4d_attack")
    found = search_matching_prompt(model, original, images, concept_prompt, seed=seed, quiet=quiet, **search_options)
    generated, target, metrics = judge_prompt(model, found.tokens, judge, concept_class, forget_pixels, seed=seed,
                                              per_class=per_class, sample_steps=sample_steps)
    metrics.update(found.record)
    return ResurrectionResult("p4d", generated, target, metrics)
