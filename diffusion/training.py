"""DDPM training (Ho et al., NeurIPS 2020) with AdamW and an EMA of the weights, through Hugging Face Accelerate."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .errors import RunError, UsageError
from .model import DiffusionModel, check_block_out_channels
from .presets import RECIPE_PRESETS, TEXT_RECIPE
from .seeding import derive_seed

logger = logging.getLogger(__name__)

MODEL_KINDS = ("class", "text")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; the defaults are the reference model's, chosen by measurement on 8x8 digits."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    num_train_timesteps: int = 1000
    seed: int = 0
    kind: str = "class"  # "class": conditioned on class ids; "text": on captions (diffusion/text_model.py)
    caption_dropout: float = 0.1  # text: share of empty prompts, for classifier-free guidance
    lora_rank: int = 0  # fine-tuning only (diffusion/fine_tune.py): 0 trains every weight, R > 0 a rank-R LoRA

    def __post_init__(self) -> None:
        _require(self.kind in MODEL_KINDS, "kind", f"one of {', '.join(MODEL_KINDS)}", self.kind)
        _require(_is_real(self.caption_dropout) and 0 <= self.caption_dropout < 1, "caption_dropout", "in [0, 1)",
                 self.caption_dropout)
        _require(_is_int(self.steps) and self.steps >= 1, "steps", "an int >= 1", self.steps)
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an int >= 1", self.batch_size)
        _require(_is_real(self.lr) and self.lr > 0, "lr", "a finite number > 0", self.lr)
        _require(_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0",
                 self.weight_decay)
        _require(_is_real(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)", self.ema_decay)
        check_block_out_channels(self.block_out_channels)
        _require(_is_int(self.layers_per_block) and self.layers_per_block >= 1, "layers_per_block", "an int >= 1",
                 self.layers_per_block)
        _require(_is_int(self.num_train_timesteps) and self.num_train_timesteps >= 1, "num_train_timesteps",
                 "an int >= 1", self.num_train_timesteps)
        _require(_is_int(self.seed), "seed", "an int", self.seed)
        _require(_is_int(self.lora_rank) and 0 <= self.lora_rank <= 1024, "lora_rank", "an int in [0, 1024]",
                 self.lora_rank)

    def to_dict(self) -> dict:
        """The recipe as JSON; a class model's omits the text fields and a recipe without LoRA its rank, so the
        cache keys of earlier recipes stay what they were."""
        data = asdict(self)
        if self.kind == "class":
            del data["kind"], data["caption_dropout"]
        if not self.lora_rank:
            del data["lora_rank"]
        return data

    @classmethod
    def for_kind(cls, kind: str, **overrides) -> TrainConfig:
        """The reference recipe of a kind of model (``class`` or ``text``, :data:`TEXT_RECIPE`), with ``overrides``."""
        _require(kind in MODEL_KINDS, "kind", f"one of {', '.join(MODEL_KINDS)}", kind)
        return cls(**{**(TEXT_RECIPE if kind == "text" else {}), **overrides})

    @classmethod
    def preset(cls, name: str) -> TrainConfig:
        """The recipe of a named preset of :data:`RECIPE_PRESETS`; UsageError for an unknown name."""
        if name not in RECIPE_PRESETS:
            raise UsageError(f"unknown preset {name!r}; expected one of: {', '.join(RECIPE_PRESETS)}")
        return cls(**RECIPE_PRESETS[name])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, name: str, expected: str, value) -> None:
    """Raise :class:`UsageError` "<name> must be <expected>; got <value>" unless ``ok``."""
    if not ok:
        raise UsageError(f"{name} must be {expected}; got {value!r}")


@dataclass
class TrainRecord:
    """What a training run did: steps, wall seconds, and the loss every ``log_every`` steps."""

    steps: int
    seconds: float
    loss_curve: list[float] = field(default_factory=list)
    log_every: int = 10


@dataclass(frozen=True)
class OneProcess:
    """The process state of a run that was not launched on several processes (the shape of Accelerate's)."""

    process_index: int = 0
    num_processes: int = 1
    is_main_process: bool = True

    def wait_for_everyone(self) -> None:
        """Nothing to wait for."""


def process_state() -> PartialState | OneProcess:
    """This process's place in an Accelerate launch. Outside a launch nothing is initialised (so each model's
    Accelerator still chooses its own device); without a visible GPU a launch's processes are CPU processes
    (gloo), which Accelerate only recognises when told so."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return OneProcess()
    return PartialState(cpu=not torch.cuda.is_available())


MIXED_PRECISIONS = ("no", "bf16")  # fp16 needs a gradient scaler, which EraseDiff's per-loss gradients bypass


def make_accelerator(model: DiffusionModel) -> Accelerator:
    """A single-process Accelerator on the model's device (a launched multi-GPU run passes its own)."""
    return Accelerator(cpu=model.device.type != "cuda")


def autocast(device: torch.device, mixed_precision: str):
    """Within the block, compute in ``mixed_precision``: ``bf16`` autocasts to bfloat16 on ``device`` (the weights
    and optimizer state stay float32), ``no`` changes nothing. Not Accelerate's, whose precision is fixed for a
    whole process by its first Accelerator."""
    _require(mixed_precision in MIXED_PRECISIONS, "mixed precision", f"one of {', '.join(MIXED_PRECISIONS)}",
             mixed_precision)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def train_denoiser(
    model: DiffusionModel,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    config: TrainConfig,
    *,
    accelerator: Accelerator | None = None,
    quiet: bool = False,
    desc: str = "train",
    snapshot_steps: Collection[int] = (),
    on_snapshot: Callable[[int, DiffusionModel], None] | None = None,
    conditions: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> TrainRecord:
    """Train ``model`` in place on ``images`` (N, C, H, W) in [-1, 1] and ``labels`` (N,) (None: unconditional).

    ``conditions(labels of a batch (B,), generator)`` gives the conditioning the model is fed for the batch (e.g. a
    random caption per image, (B, L) token ids, for a text model); by default the labels themselves.

    ``config.batch_size`` is the global batch. On several processes (an Accelerate launch) every process draws the
    same global batch, timesteps and noise from the seed and computes the loss on its own equal share of the rows;
    averaging the gradients then gives the one-process gradient, so the weights match a one-process run up to
    floating-point summation order. At the end the EMA weights are copied into ``model.unet``. After each step k in
    ``snapshot_steps``, ``on_snapshot(k, snapshot)`` gets a copy with the EMA weights: with a constant learning rate
    that is exactly the model a k-step run of the same recipe returns (benchmarks measure training length with one
    run).
    """
    accelerator = accelerator or make_accelerator(model)
    processes = accelerator.num_processes
    if config.batch_size % processes:
        raise UsageError(f"batch size {config.batch_size} cannot be shared equally by {processes} processes; "
                         f"give a multiple of {processes}")
    share = config.batch_size // processes
    rows = slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "train", 0))  # the same on every process
    optimizer = torch.optim.AdamW(model.unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    unet, optimizer = accelerator.prepare(model.unet, optimizer)
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=config.ema_decay)
    device = accelerator.device
    n = len(images)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    record = TrainRecord(steps=config.steps, seconds=0.0)
    running = 0.0
    start = time.perf_counter()
    unet.train()
    bar = tqdm(range(config.steps), desc=desc, disable=quiet or not accelerator.is_local_main_process, leave=False)
    for step in bar:
        if cursor + config.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        t = torch.randint(0, model.num_train_timesteps, (len(idx),), generator=generator)[rows].to(device)
        noise = torch.randn((len(idx), *images.shape[1:]), generator=generator)[rows].to(device)
        x0 = images[idx[rows]].to(device)
        c = None
        if labels is not None:
            c = (labels[idx] if conditions is None else conditions(labels[idx], generator))[rows].to(device)
        loss = F.mse_loss(unet(model.add_noise(x0, noise, t), t, c).sample, noise)
        accelerator.backward(loss)
        global_loss = accelerator.reduce(loss.detach(), reduction="mean").item() if processes > 1 else loss.item()
        if not math.isfinite(global_loss):
            raise RunError(f"training loss became {global_loss} at step {step}; lower the learning rate")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(unet).parameters())
        running += global_loss
        if on_snapshot is not None and step + 1 in snapshot_steps:
            snapshot = model.copy()
            snapshot.unet = copy.deepcopy(accelerator.unwrap_model(unet))
            ema.copy_to(snapshot.unet.parameters())
            on_snapshot(step + 1, snapshot)
        if (step + 1) % record.log_every == 0:
            record.loss_curve.append(running / record.log_every)
            bar.set_postfix(loss=f"{record.loss_curve[-1]:.4f}")
            running = 0.0
    ema.copy_to(accelerator.unwrap_model(unet).parameters())
    model.unet = accelerator.unwrap_model(unet).eval()
    record.seconds = time.perf_counter() - start
    logger.info("%s: %d steps in %.1f s, final loss %.4f", desc, config.steps, record.seconds,
                record.loss_curve[-1] if record.loss_curve else float("nan"))
    return record
