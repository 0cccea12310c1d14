"""Adversarial prompts: search a few real words that, put before the concept prompt, bring the erased concept back.

After Zhang, Jia, Chen, Chen, Zhang, Liu, Liu, "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are
Still Easy To Generate Unsafe Images ... For Now" (UnlearnDiffAtk), ECCV 2024: the unlearned model itself is the
attacker's classifier. ``k`` prefix tokens are optimised on the probability simplex over the vocabulary to lower the
model's denoising loss on images of the concept under [prefix + concept prompt]; the forward pass uses the nearest
vertex (a real token, straight-through gradient), and the tokens are whole words, so the result is a prompt anyone
can type.
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.params import Interval, validate_params
from diffusion.seeding import derive_seed
from diffusion.text_model import TextDiffusionModel

from .prompt_fit import FoundPrompt, fit_prompt, frozen_copy_reading, judge_prompt
from .regeneration import POSITIVE_INT, ResurrectionResult


class SimplexTokens(nn.Module):
    """A frozen token table (V, D) whose ids V..V+k-1 read straight-through tokens: ids (...) -> (..., D).

    ``logits`` (k, W) hold the relaxed choice of each prefix token among the W ``words`` (token ids of whole words,
    so the prompt reads and re-tokenizes as typed); the forward uses the one-hot of its argmax (a real token) and
    the gradient of the softmax.
    """

    def __init__(self, table: nn.Embedding, words: torch.Tensor, k: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("table", table.weight.detach().clone())
        self.register_buffer("words", words)
        self.logits = nn.Parameter(torch.randn((k, len(words)), generator=generator) * 0.01)

    def tokens(self) -> torch.Tensor:
        """The current prefix as real token ids (k,)."""
        return self.words[self.logits.argmax(1)]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        soft = self.logits.softmax(1)
        hard = F.one_hot(soft.argmax(1), soft.shape[1]).to(soft.dtype)
        prefix = (hard + soft - soft.detach()) @ self.table[self.words]
        return F.embedding(ids, torch.cat([self.table, prefix]))


def word_tokens(tokenizer) -> torch.Tensor:
    """Ids of the tokenizer's whole-word tokens (CLIP BPE marks a word's end with ``</w>``), specials excluded."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor(sorted(i for token, i in tokenizer.get_vocab().items()
                               if token.endswith("</w>") and i not in special))


def search_prompt(
    model: TextDiffusionModel,
    images: LabeledImages,
    concept_prompt: str,
    *,
    seed: int = 0,
    prefix_tokens: int = 3,
    steps: int = 100,
    lr: float = 0.01,
    weight_decay: float = 0.1,
    batch_size: int = 32,
    quiet: bool = True,
) -> FoundPrompt:
    """Optimise ``prefix_tokens`` tokens before ``concept_prompt`` on ``images`` (the diffusion's data) with AdamW
    (UnlearnDiffAtk's lr 0.01, weight decay 0.1) on the frozen model's DDPM loss, timesteps and noises from the seed.
    ``model`` is never changed."""
    validate_params({"prefix_tokens": POSITIVE_INT, "steps": POSITIVE_INT, "batch_size": POSITIVE_INT,
                     "lr": [Interval(Real, 0, None, closed="neither")], "weight_decay": [Interval(Real, 0, None)]},
                    {"prefix_tokens": prefix_tokens, "steps": steps, "batch_size": batch_size, "lr": lr,
                     "weight_decay": weight_decay}, "search_prompt")
    if len(images) == 0:
        raise UsageError("the adversarial prompt search needs images of the concept; got none")
    concept = model.tokenize([concept_prompt])[0]
    words = int((concept != model.tokenizer.eos_token_id).sum()) - 1  # the concept's tokens after BOS
    if words + prefix_tokens + 2 > len(concept):
        raise UsageError(f"'{concept_prompt}' and {prefix_tokens} prefix tokens do not fit the tokenizer's "
                         f"{len(concept)} positions")
    generator = torch.Generator().manual_seed(derive_seed(seed, "adversarial-prompt"))
    probe, table, simplex = frozen_copy_reading(
        model, lambda table: SimplexTokens(table, word_tokens(model.tokenizer), prefix_tokens, generator))
    vocabulary = table.num_embeddings
    slots = torch.arange(vocabulary, vocabulary + prefix_tokens)
    prompt = torch.cat([concept[:1], slots, concept[1:-prefix_tokens]])
    before, after = fit_prompt(probe, images.images.to(probe.device), prompt,
                               torch.optim.AdamW([simplex.logits], lr=lr, weight_decay=weight_decay), steps=steps,
                               batch_size=batch_size, generator=generator, desc="adversarial prompt", quiet=quiet)
    found = torch.cat([concept[:1], simplex.tokens().cpu(), concept[1:-prefix_tokens]])
    text = model.tokenizer.decode(found, skip_special_tokens=True)
    record = {"prompt": text, "concept_prompt": concept_prompt, "prefix_tokens": prefix_tokens, "steps": steps,
              "lr": lr, "weight_decay": weight_decay, "fit_loss_before": before, "fit_loss_after": after}
    return FoundPrompt(found, text, record)


def adversarial_prompt_attack(
    model: TextDiffusionModel,
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
    """Search a prompt (:func:`search_prompt`), generate ``per_class`` images with it on ``model`` itself (the
    noises of the class's evaluation samples) and judge them as ``concept_class``."""
    found = search_prompt(model, images, concept_prompt, seed=seed, quiet=quiet, **search_options)
    generated, target, metrics = judge_prompt(model, found.tokens, judge, concept_class, forget_pixels, seed=seed,
                                              per_class=per_class, sample_steps=sample_steps)
    metrics.update(found.record)
    return ResurrectionResult("adversarial_prompt", generated, target, metrics)
