"""EraseDiff: unlearning as a constrained problem, solved first-order.

Wu, Harandi et al., "EraseDiff: Erasing Data Influence in Diffusion Models", arXiv 2401.05779 (CVPR 2025).
The value-function constraint is handled with the dynamic barrier rule of BOME! (Liu, Ye, Wright, Stone, Liu,
"BOME! Bilevel Optimization Made Easy: A Simple First-Order Approach", NeurIPS 2022).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import ClassVar

import torch
from accelerate import Accelerator

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval, Options
from diffusion.splits import ForgetTask
from diffusion.text_model import TRAINABLE_MODULES

from .adversarial_embedding import AdversarialEmbedding
from .base import METHODS, RunOptions, UnlearnResult
from .finetune import Finetune
from .loop import GradientUnlearner, StepInputs
from .losses import (
    diffusion_loss,
    draw_timesteps_and_noise,
    membership_gap,
    membership_matching_loss,
    nonmember_anchor_loss,
    relabel_and_diffusion_losses,
    relabel_loss,
    relabel_target,
)
from .sharding import per_row
from .stopping import MembershipStopping

# BOME's rate when ``eta`` is None, by kind of deletion (measured: benchmarks/results/defaults.md).
DEFAULT_ETA_CLASS, DEFAULT_ETA_SAMPLES = 0.2, 0.05


def flat_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Inner product of two gradients given as lists of tensors (in float64)."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def bome_multiplier(
    grad_retain: Sequence[torch.Tensor], grad_forget: Sequence[torch.Tensor], eta: float, q: float | None = None
) -> float:
    """BOME's lambda: max((phi - <g_r, g_q>) / ||g_q||^2, 0), with g_q = grad q = grad L_f.

    The smallest lambda >= 0 for which the update direction g_r + lambda * g_q decreases q at least at rate phi:
    BOME's default phi = eta * ||g_q||^2 when ``q`` is None, its alternative phi = eta * q otherwise (then the
    inner minimum f_hat matters: a constraint already met, q <= 0, only asks q not to grow). Returns 0 when grad q
    vanishes (the constraint is flat there).
    """
    norm_sq = flat_dot(grad_forget, grad_forget)
    if norm_sq == 0.0:
        return 0.0
    phi = eta * norm_sq if q is None else eta * q
    return max((phi - flat_dot(grad_retain, grad_forget)) / norm_sq, 0.0)


@METHODS.register
@dataclass
class EraseDiff(GradientUnlearner):
    """EraseDiff (Wu, Le, Hayat, Harandi, arXiv 2401.05779): min L_r(theta) s.t. q(theta) = L_f(theta) -
    min_phi L_f(phi) <= 0, solved first-order.

    Each outer step draws a forget batch and a remain batch, each with its own timesteps and noise, then:

    1. from a snapshot of theta, ``inner_steps`` SGD steps (``inner_lr``) on L_f give f_hat = L_f(theta^K)
       (a constant); theta is restored;
    2. q = L_f(theta) - f_hat, so grad q = grad L_f(theta);
    3. lambda by BOME's rule with rate ``eta`` (see :func:`bome_multiplier`), or ``fixed_lambda`` when given;
    4. theta <- Adam(theta, grad L_r + lambda * grad q), the outer gradient clipped to norm ``grad_clip``,
       and an EMA of the weights (decay ``ema_decay`` from step ``ema_start`` on) is what is returned.

    Text-to-image models: the relabel target is the official SD form, the forget prompt's prediction regressed on the
    anchor prompt's (stop-gradient, same noisy input; the task's ``anchor``). Logged per step: loss_retain,
    loss_forget, q, lambda, cos_grad. Why each default is what it is: benchmarks/results/defaults.md.

    Args:
        steps: outer steps.
        lr: Adam learning rate.
        batch_size: forget and remain images per step (the forget batch is the whole forget set when smaller).
        inner_steps: the K SGD steps of step 1 (0: none; the ``gradient`` barrier does not use f_hat).
        inner_lr: their learning rate.
        eta: BOME's rate; None: 0.2 when the task names a class, 0.05 when it deletes member images only.
        fixed_lambda: a constant lambda instead of BOME's rule (None: adaptive).
        forget_target: what the forget images' predictions are regressed on: ``relabel`` (the model's own detached
            prediction under another class, drawn from the classes not being forgotten, as in the authors' later
            code), ``uniform`` (u ~ U[0, 1) noise, the paper's form) or ``match`` (each forget image's loss driven
            to what the original gives it as a non-member, :func:`membership_matching_loss`; needs
            ``task.nonmembers``, images of the same distribution never trained on).
        barrier: BOME's ``gradient`` (phi = eta ||grad q||^2) or ``value`` (phi = eta q; needs inner_steps >= 1).
        adversarial_embedding: also fit an attacker's class embedding (one Adam step per step on the forget images,
            :class:`~unlearn.adversarial_embedding.AdversarialEmbedding`) and apply the relabel loss under it, so
            the class cannot be brought back by embedding inversion (relabel target only).
        repair_steps: steps of plain DDPM training on the remaining data after the erasure (0: none).
        stop_every: every ``stop_every`` steps, stop once the forget images' loss-attack AUC against the task's
            non-members is at most 0.5 + ``stop_margin`` (unlearn/stopping.py; None: run all ``steps``).
        stop_margin: that margin.
        batched_forward: with the relabel target and no inner step, both losses from one forward of the UNet over
            the stacked forget and remain batches (the same steps up to summation order).
        modules: a text model's UNet parameters that train (:data:`~diffusion.text_model.TRAINABLE_MODULES`; the
            text encoder stays frozen).
        grad_clip: outer gradient norm bound (None: off).
        ema_decay: EMA of the weights (None: off).
        ema_start: steps before the averaging starts.
    """

    name = "erasediff"
    _parameter_constraints: ClassVar[dict] = {
        **GradientUnlearner._parameter_constraints,
        "inner_steps": [Interval(Integral, 0, None)],
        "inner_lr": [Interval(Real, 0, None, closed="neither")],
        "eta": [None, Interval(Real, 0, None, closed="neither")],
        "fixed_lambda": [None, Interval(Real, 0, None)],
        "forget_target": [Options("uniform", "relabel", "match")],
        "barrier": [Options("gradient", "value")],
        "adversarial_embedding": [Options(True, False)],
        "repair_steps": [Interval(Integral, 0, None)],
        "stop_every": [None, Interval(Integral, 1, None)],
        "stop_margin": [Interval(Real, 0, 0.5)],
        "batched_forward": [Options(True, False)],
        "modules": [Options(*TRAINABLE_MODULES)],
    }

    steps: int = 300
    lr: float = 1e-4
    batch_size: int = 128
    inner_steps: int = 0
    inner_lr: float = 1e-3
    eta: float | None = None
    fixed_lambda: float | None = None
    forget_target: str = "relabel"
    barrier: str = "gradient"
    adversarial_embedding: bool = False
    repair_steps: int = 0
    stop_every: int | None = None
    stop_margin: float = 0.05
    batched_forward: bool = False
    modules: str = "full"
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.98
    ema_start: int = 50

    def run(self, model: DiffusionModel, task: ForgetTask, options: RunOptions) -> UnlearnResult:
        """The constrained steps, then ``repair_steps`` of plain DDPM training on D_r (same lr, batch and EMA;
        the callback sees the first phase only). Curves of the repair phase are logged as ``repair_loss_retain``."""
        result = super().run(model, task, options)
        if not self.repair_steps:
            return result
        repair = Finetune(steps=self.repair_steps, lr=self.lr, batch_size=self.batch_size, grad_clip=self.grad_clip,
                          ema_decay=self.ema_decay, ema_start=min(self.ema_start, self.repair_steps // 5))
        repaired = repair.run(result.model, task, replace(options, callback=None))
        curves = {**result.curves, "repair_loss_retain": repaired.curves["loss_retain"]}
        return UnlearnResult(repaired.model, self.name, self.get_params(), result.steps + repaired.steps,
                             result.seconds + repaired.seconds, curves)

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> dict:
        """The original model (frozen); for ``match`` its membership gap on the task's non-members; with
        ``adversarial_embedding`` the attacker's embedding."""
        context = {"original": original}
        if self.forget_target == "match":
            context["gap"] = membership_gap(original, task.retain, task.nonmembers, generator)
        if self.adversarial_embedding:
            if not isinstance(getattr(original.unet, "class_embedding", None), torch.nn.Embedding):
                raise UsageError("adversarial_embedding needs a class-conditional UNet whose class embedding is a "
                                 "lookup table (nn.Embedding)")
            context["adversary"] = AdversarialEmbedding(original)
        return context

    def forget_loss(
        self, model: DiffusionModel, batch: LabeledImages, task: ForgetTask, context, generator: torch.Generator
    ):
        """A closure computing L_f on one fixed draw of timesteps and targets (reused by the inner steps)."""
        if self.forget_target == "relabel":
            draw = relabel_target(model, batch, task, generator)
            adversary = context.get("adversary")
            if adversary is None:
                return lambda: relabel_loss(model, draw)

            def relabel_loss_also_under_the_adversary() -> torch.Tensor:
                with adversary.conditioning(model, adversary.vector.detach()):
                    adversarial = relabel_loss(model, draw)
                return relabel_loss(model, draw) + adversarial

            return relabel_loss_also_under_the_adversary
        if self.forget_target == "match":
            return membership_matching_loss(model, context["original"], context["gap"], batch, generator)
        t, _ = draw_timesteps_and_noise(model, batch, generator)
        uniform = per_row(batch, lambda n: torch.rand((n, *batch.images.shape[1:]), generator=generator))
        uniform = uniform.to(model.device)
        x0, labels = batch.images.to(model.device), batch.labels.to(model.device)
        return lambda: model.denoising_loss(x0, labels, t, uniform).mean()

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        parameters = model.trainable_parameters()
        if "adversary" in step.context:  # the attacker moves first, on this step's forget images
            t, noise = draw_timesteps_and_noise(model, step.forget, step.generator)
            step.context["adversary"].attack_step(model, step.forget.images.to(model.device),
                                                  step.forget.labels.to(model.device), t, noise, step.accelerator)
        if self._one_forward(step.context):
            draw = relabel_target(model, step.forget, step.task, step.generator)
            loss_forget, loss_retain = relabel_and_diffusion_losses(model, draw, step.retain, step.generator)
            grad_forget = self._gradient(loss_forget, parameters, step.accelerator, keep_graph=True)
            f_hat = loss_forget.item()
        else:
            loss_forget_fn = self.forget_loss(model, step.forget, step.task, step.context, step.generator)
            loss_forget = loss_forget_fn()
            grad_forget = self._gradient(loss_forget, parameters, step.accelerator)
            f_hat = self._inner_minimum(parameters, loss_forget_fn, loss_forget, grad_forget, step.accelerator)
            loss_retain = diffusion_loss(model, step.retain, step.generator)
            if self.forget_target == "match":
                loss_retain = loss_retain + nonmember_anchor_loss(model, step.context["original"],
                                                                  step.task.nonmembers, step.retain, step.generator)
        grad_retain = self._gradient(loss_retain, parameters, step.accelerator)
        q = loss_forget.item() - f_hat
        lam = self.fixed_lambda if self.fixed_lambda is not None else bome_multiplier(
            grad_retain, grad_forget, self.rate(step.task), q if self.barrier == "value" else None
        )
        norms = (flat_dot(grad_retain, grad_retain) * flat_dot(grad_forget, grad_forget)) ** 0.5
        cos = flat_dot(grad_retain, grad_forget) / norms if norms > 0 else 0.0
        for p, g_r, g_f in zip(parameters, grad_retain, grad_forget):
            p.grad = g_r.add_(g_f, alpha=lam)  # in place: no third copy of the weights' size
        return {
            "loss_retain": loss_retain.item(),
            "loss_forget": loss_forget.item(),
            "q": q,
            "lambda": float(lam),
            "cos_grad": cos,
        }

    def _one_forward(self, context: dict) -> bool:
        """Whether this step's two losses come from one forward over the stacked forget and remain batches."""
        return (self.batched_forward and self.forget_target == "relabel" and self.inner_steps == 0
                and "adversary" not in context)

    def stopping_rule(self, task: ForgetTask, seed: int) -> MembershipStopping | None:
        if self.stop_every is None:
            return None
        return MembershipStopping(task.forget, task.nonmembers, self.stop_every, self.stop_margin, seed)

    def check_task(self, task: ForgetTask) -> None:
        if self.barrier == "value" and self.inner_steps == 0:
            raise UsageError("barrier 'value' needs inner_steps >= 1 (with none, q is 0 and the barrier never acts); "
                             "set inner_steps or use barrier 'gradient'")
        if self.adversarial_embedding and self.forget_target != "relabel":
            raise UsageError(f"adversarial_embedding works with forget_target 'relabel'; got '{self.forget_target}'")
        if self.stop_every is not None and (task.nonmembers is None or len(task.nonmembers) == 0):
            raise UsageError("stop_every needs non-member images (never trained on, same distribution as the "
                             "forget set) for its membership probe; give some, or leave stop_every unset")
        if self.forget_target == "match" and (task.nonmembers is None or len(task.nonmembers) == 0):
            raise UsageError("forget_target 'match' needs non-member images (never trained on, same distribution) "
                             "to match the forget images to; give some, or use forget_target 'relabel'")

    def rate(self, task: ForgetTask) -> float:
        """BOME's rate eta for ``task``: the given one, else the default for its kind of deletion."""
        if self.eta is not None:
            return self.eta
        return DEFAULT_ETA_CLASS if task.forget_classes else DEFAULT_ETA_SAMPLES

    @staticmethod
    def _gradient(
        loss: torch.Tensor, parameters: list[torch.nn.Parameter], accelerator: Accelerator, keep_graph: bool = False
    ):
        """grad of ``loss`` w.r.t. ``parameters`` (zeros where unused), averaged over processes; ``keep_graph``
        keeps the autograd graph for a second loss from the same forward."""
        grads = torch.autograd.grad(loss, parameters, retain_graph=keep_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads)]
        if accelerator.num_processes > 1:  # lambda must be the same on every process
            grads = [accelerator.reduce(g, reduction="mean") for g in grads]
        return grads

    def _inner_minimum(
        self,
        parameters: list[torch.nn.Parameter],
        loss_fn,
        first_loss: torch.Tensor,
        first_gradient: list[torch.Tensor],
        accelerator: Accelerator,
    ) -> float:
        """f_hat = L_f after ``inner_steps`` SGD steps from the current weights, which are then restored.

        ``first_loss`` and ``first_gradient`` are L_f and its gradient at the current weights (the outer step needs
        them too, so they are reused: with no inner step f_hat is ``first_loss``).
        """
        if self.inner_steps == 0:
            return first_loss.item()
        snapshot = [p.detach().clone() for p in parameters]
        grads = first_gradient
        for step in range(self.inner_steps):
            if step > 0:
                grads = self._gradient(loss_fn(), parameters, accelerator)
            with torch.no_grad():
                for p, g in zip(parameters, grads):
                    p.sub_(self.inner_lr * g)
        with torch.no_grad():
            f_hat = loss_fn().item()
            for p, saved in zip(parameters, snapshot):
                p.copy_(saved)
        return f_hat
