"""The model under audit: a diffusers UNet and its DDPM noise schedule behind one small adapter.

Everything in ``unlearn`` and ``attacks`` talks to :class:`DiffusionModel` only. Noise prediction follows
Ho et al., "Denoising Diffusion Probabilistic Models" (NeurIPS 2020); fast sampling uses DDIM
(Song et al., ICLR 2021).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.utils import logging as diffusers_logging
from safetensors import SafetensorError

from .errors import UsageError
from .io import read_text_file, write_json
from .params import cut_text
from .seeding import seeded_generators, seeded_normal
from .splits import ForgetSpec, ForgetTask, Splits

if TYPE_CHECKING:
    from .captions import ClassCaptions
    from .data import ImageDataset, LabeledImages

ImageBatch = torch.Tensor  # (B, C, H, W), values in [-1, 1]
HUB_PREFIX = "hf://"  # marks a Hugging Face hub model id, e.g. hf://google/ddpm-cifar10-32


def default_device() -> torch.device:
    """CUDA when available, else the CPU: the same code runs on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_unet(
    sample_size: int = 8,
    channels: int = 1,
    num_classes: int | None = 10,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
) -> UNet2DModel:
    """A small UNet2DModel, class-conditional through ``num_class_embeds`` unless ``num_classes`` is None.

    The default (sample 8x8, channels (32, 64), one layer per block) has about 0.65 M parameters. A
    :class:`UsageError` says when the widths or the image size cannot make such a UNet.
    """
    check_block_out_channels(block_out_channels)
    blocks = len(block_out_channels)
    factor = 2 ** (blocks - 1)
    if not isinstance(sample_size, int) or sample_size < factor or sample_size % factor:
        raise UsageError(
            f"image size {sample_size!r} does not fit a UNet with {blocks} blocks; expected a multiple of {factor}"
        )
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * blocks,
        up_block_types=("UpBlock2D",) * blocks,
        norm_num_groups=min(8, block_out_channels[0]),
        num_class_embeds=num_classes,
    )


def check_block_out_channels(block_out_channels: Sequence[int]) -> None:
    """Raise :class:`UsageError` unless the UNet block widths are positive ints its group norm can divide."""
    widths = block_out_channels
    if (
        not isinstance(widths, (list, tuple))
        or not widths
        or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
    ):
        raise UsageError(f"block_out_channels must be positive ints; got {widths!r}")
    groups = min(8, widths[0])
    if any(w % groups for w in widths):
        raise UsageError(
            f"block_out_channels must all be multiples of {groups} (the UNet's group norm); got {tuple(widths)}"
        )


class DiffusionModel:
    """A diffusers ``UNet2DModel`` noise predictor with its ``DDPMScheduler``.

    Args:
        unet: the noise predictor eps_theta(x_t, t, c); class-conditional when ``num_class_embeds`` is set.
        scheduler: the DDPM schedule the UNet was trained with (defines alpha_bar_t).
        device: where to run; defaults to :func:`default_device`.
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.unet = unet.to(self.device)
        self.scheduler = scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)

    @classmethod
    def create(
        cls,
        *,
        sample_size: int = 8,
        channels: int = 1,
        num_classes: int | None = 10,
        block_out_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        num_train_timesteps: int = 1000,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> DiffusionModel:
        """A freshly initialised model; the same ``seed`` gives the same weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_unet(sample_size, channels, num_classes, block_out_channels, layers_per_block)
        scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
        return cls(unet, scheduler, device)

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int | None:
        """Number of class labels the UNet is conditioned on, or None for an unconditional model."""
        return self.unet.config.num_class_embeds

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def conditioning(self) -> str:
        """What the model is conditioned on: ``class`` ids, ``text`` token ids, or ``none``."""
        return "none" if self.num_classes is None else "class"

    @property
    def recipe_kind(self) -> str:
        """The kind of training recipe a model like this one is trained with (:meth:`TrainConfig.for_kind`)."""
        return "class"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(self.unet.config.in_channels), *size)

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of the images the model is given and generates (its :attr:`image_shape`, the
        diffusion's own data, unless it diffuses latents)."""
        return self.image_shape

    def require_class_conditioning(self, what: str) -> int:
        """Return the number of classes, or raise a :class:`UsageError` saying ``what`` needs class labels."""
        if self.num_classes is None:
            raise UsageError(f"{what} needs a class-conditional model; this UNet has no class embedding")
        return self.num_classes

    def train_only(self, modules: str) -> None:
        """Let only ``modules`` of the model require gradients: a class-conditional UNet trains whole (``full``);
        a text model chooses among its UNet's parts (:meth:`TextDiffusionModel.train_only`)."""
        if modules != "full":
            raise UsageError(f"modules '{modules}' choose among a text-to-image UNet's parameters; this model is "
                             f"conditioned on {self.conditioning} (leave modules 'full')")

    def classes_known(self, wordings: ClassCaptions | None, what: str) -> int | None:
        """How many classes this model can be asked for: its class labels (a :class:`UsageError` naming ``what``
        for an unconditional model). ``wordings`` are how a text model asks for them (unused here)."""
        return self.require_class_conditioning(what)

    def conditions_for(self, labels: torch.Tensor, wordings: ClassCaptions | None = None) -> torch.Tensor | list[str]:
        """How this model is asked for an image of each class in ``labels`` (N,): the labels themselves (a text
        model: a prompt per label in the data's ``wordings``)."""
        return labels

    # ------------------------------------------------------------------ deletion requests
    def check_request(self, classes: Sequence[int], concept: Sequence[str]) -> None:
        """Raise :class:`UsageError` unless a request naming ``classes`` or ``concept`` prompts fits this model: a
        class-conditional model erases classes or images, not a concept."""
        if concept:
            raise UsageError("--forget-concept erases a concept from a text-to-image model; this model is conditioned "
                             f"on {self.conditioning} (use --forget-class or --forget-ids)")

    def forget_task(self, dataset: ImageDataset, splits: Splits, spec: ForgetSpec, seed: int = 0) -> ForgetTask:
        """The :class:`ForgetTask` of ``spec`` as this model takes it: class-labelled images (a text model's are
        captioned, :meth:`TextDiffusionModel.forget_task`); ``seed`` draws a text model's captions."""
        self.check_request(spec.classes, spec.concept)
        return ForgetTask.from_spec(dataset, splits, spec)

    def data_view(self, dataset: ImageDataset, seed: int) -> Callable[[LabeledImages], LabeledImages]:
        """A function giving images of ``dataset`` as this model takes them: as they are (a text model's are
        captioned and encoded)."""
        return lambda subset: subset

    def check_task(self, task: ForgetTask, what: str = "unlearning") -> None:
        """Raise :class:`UsageError` unless ``task`` fits this model: conditioned on the task's classes and taking
        its images; ``what`` names the job in the message ("unlearning", "the audit's retrained model")."""
        if task.anchor is not None:
            raise UsageError(f"{what}: a concept (prompts) is erased from a text-to-image model; this model is "
                             f"conditioned on {self.conditioning} (use --forget-class or --forget-ids)")
        num_classes = self.require_class_conditioning(what)
        if num_classes != task.num_classes:
            raise UsageError(f"{what}: the model has {num_classes} class labels but the forget task has "
                             f"{task.num_classes}; use the data the model was trained on")
        task.check_shape(self.image_shape, what)

    # ------------------------------------------------------------------ diffusion
    def add_noise(self, x0: ImageBatch, noise: torch.Tensor, t: torch.Tensor) -> ImageBatch:
        """Forward process q(x_t | x_0): sqrt(ab_t) * x0 + sqrt(1 - ab_t) * noise, all (B, C, H, W); t (B,)."""
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_noise(self, x_t: ImageBatch, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t, t, c): (B, C, H, W) from x_t (B, C, H, W), t (B,) and class labels (B,) or None."""
        if labels is not None and self.num_classes is None:
            raise UsageError("class labels were given to an unconditional model")
        if labels is None and self.num_classes is not None:
            raise UsageError("this model is class-conditional; give class labels")
        return self.unet(x_t, t, class_labels=labels).sample

    def denoising_loss(
        self, x0: ImageBatch, labels: torch.Tensor | None, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample DDPM loss ||noise - eps_theta(x_t, t, c)||^2 averaged over pixels: shape (B,)."""
        prediction = self.predict_noise(self.add_noise(x0, noise, t), t, labels)
        return F.mse_loss(prediction, noise, reduction="none").flatten(1).mean(1)

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | None,
        *,
        seed: int,
        ids: Sequence[int] | None = None,
        num: int | None = None,
        steps: int = 50,
        method: str = "ddim",
        batch_size: int = 256,
    ) -> ImageBatch:
        """Generate images, (B, C, H, W) in [-1, 1], on the CPU.

        The starting noise of image i derives from (seed, ids[i]) (``ids`` default to 0..B-1), so two models,
        or two batch sizes, see exactly the same noise. ``method='ddim'`` is deterministic (eta = 0) with
        ``steps`` steps; ``method='ddpm'`` is ancestral sampling over every training timestep.
        """
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            num = len(labels)
        elif self.num_classes is not None:
            raise UsageError("this model is class-conditional; give class labels to sample")
        if num is None:
            raise UsageError("give labels or num to sample")
        ids = list(range(num)) if ids is None else [int(i) for i in ids]
        if method == "ddim":
            scheduler = DDIMScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(steps)
        elif method == "ddpm":
            scheduler = DDPMScheduler.from_config(self.scheduler.config)
            scheduler.set_timesteps(self.num_train_timesteps)
        else:
            raise UsageError(f"sampling method must be 'ddim' or 'ddpm'; got '{method}'")
        was_training = self.unet.training
        self.unet.eval()
        out = []
        for start in range(0, num, batch_size):
            batch_ids = ids[start : start + batch_size]
            x = seeded_normal(seed, batch_ids, self.image_shape, stream="sample").to(self.device)
            c = labels[start : start + batch_size].to(self.device) if labels is not None else None
            generators = seeded_generators(seed, batch_ids, stream="ddpm-step") if method == "ddpm" else None
            for t in scheduler.timesteps:
                eps = self.predict_noise(x, t.expand(len(x)).to(self.device), c)
                if method == "ddim":
                    x = scheduler.step(eps, t, x, eta=0.0).prev_sample
                else:
                    x = scheduler.step(eps, t, x, generator=generators).prev_sample
            out.append(x.clamp(-1, 1).cpu())
        self.unet.train(was_training)
        return torch.cat(out)

    # ------------------------------------------------------------------ copies and files
    def copy(self) -> DiffusionModel:
        """A deep copy: changing it never changes this model."""
        return DiffusionModel(copy.deepcopy(self.unet), copy.deepcopy(self.scheduler), self.device)

    def reinitialized(self, seed: int) -> DiffusionModel:
        """The same architecture and schedule with freshly initialised weights (the same ``seed``, the same weights)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DModel.from_config(self.unet.config)
        return DiffusionModel(unet, copy.deepcopy(self.scheduler), self.device)

    def training_conditions(self, caption_dropout: float):
        """What training on this model's (image, label) pairs feeds it besides the images: the labels themselves
        (None; a text model drops captions, :meth:`TextDiffusionModel.training_conditions`)."""
        return None

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the UNet's activations in the backward pass instead of storing them (memory for time)."""
        self.unet.enable_gradient_checkpointing()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The UNet parameters that require gradients, in module order (what an optimizer updates)."""
        return [p for p in self.unet.parameters() if p.requires_grad]

    def fingerprint(self) -> str:
        """SHA-256 over what the model's outputs depend on (:meth:`_identity`): each tensor's name, shape and values,
        by name, then the other settings' bytes."""
        state, settings = self._identity()
        digest = hashlib.sha256()
        for name, tensor in sorted(state.items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(settings)
        return digest.hexdigest()

    def _identity(self) -> tuple[dict[str, torch.Tensor], bytes]:
        """The tensors and other settings the fingerprint covers: the UNet's parameters and buffers."""
        return self.unet.state_dict(), b""

    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write a diffusers ``DDPMPipeline`` folder (safetensors) and ``erasediff.json`` with ``metadata``."""
        directory = Path(directory)
        DDPMPipeline(unet=self.unet, scheduler=self.scheduler).save_pretrained(directory, safe_serialization=True)
        write_json(directory / "erasediff.json", {"fingerprint": self.fingerprint(), **(metadata or {})})

    @classmethod
    def load(cls, source: str | Path, device: torch.device | str | None = None) -> DiffusionModel:
        """Load a diffusers DDPM pipeline folder, or a Hugging Face hub model written ``hf://owner/name``
        (:func:`diffusion.loading.load_model` chooses this class or the text model's for a folder of either layout).

        Weights are read from safetensors only, so a checkpoint from a stranger cannot run code. A
        :class:`UsageError` names what is wrong with a model that is not a noise predictor this project can use:
        weights that do not match the UNet config or are not finite, a scheduler that does not predict epsilon,
        an unreadable config or ``erasediff.json``.
        """
        name = str(source)
        location, local = model_location(source)
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # the weight mismatches it would log are raised below instead
        try:
            # low_cpu_mem_usage=False reports mismatched shapes instead of failing; it initialises from the RNG
            with torch.random.fork_rng(devices=[]):
                unet, info = UNet2DModel.from_pretrained(
                    location, subfolder="unet", use_safetensors=True, local_files_only=local,
                    low_cpu_mem_usage=False, ignore_mismatched_sizes=True, output_loading_info=True,
                )
            scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler", local_files_only=local)
        except LOAD_ERRORS as error:
            raise UsageError(f"could not load model '{name}': {first_line(error)}") from error
        finally:
            diffusers_logging.set_verbosity(verbosity)
        problems = [f"missing {key}" for key in info["missing_keys"]]
        problems += [f"unexpected {key}" for key in info["unexpected_keys"]]
        problems += [f"{key} has shape {tuple(found)}, expected {tuple(expected)}"
                     for key, found, expected in info["mismatched_keys"]]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UsageError(f"model '{name}': unet weights do not match its config: {problems[0]}{more}")
        check_noise_predictor(unet, scheduler, name)
        return check_record(cls(unet, scheduler, device), location, local, name)

    @staticmethod
    def read_metadata(directory: str | Path) -> dict:
        """The ``erasediff.json`` written beside a saved model ({} when absent, e.g. a hub model)."""
        path = Path(directory) / "erasediff.json"
        return _read_json_object(path) if path.is_file() else {}


def model_location(source: str | Path) -> tuple[str, bool]:
    """Where a model is read from, and whether that is a local folder: ``hf://owner/name`` is a hub id (checked to
    look like one), anything else a folder that must exist and hold a model (a one-line :class:`UsageError`)."""
    name = str(source)
    if name.startswith(HUB_PREFIX):
        location = name[len(HUB_PREFIX) :]
        if not _looks_like_hub_id(location):
            raise UsageError(f"'{name}' is not a hub model id; expected {HUB_PREFIX}owner/name")
        return location, False
    _check_model_folder(Path(name), name)
    return name, True


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


MAX_JSON_BYTES = 64 * 2**20  # a model's record holds loss curves: megabytes at most


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; a :class:`UsageError` naming the file when it holds anything else."""
    text = read_text_file(path, "model file", MAX_JSON_BYTES, "a JSON object")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UsageError(f"'{path}' is not a readable JSON file: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"'{path}' must hold a JSON object; got a {type(data).__name__}")
    return data


def _check_model_folder(path: Path, name: str) -> None:
    """Raise :class:`UsageError` unless ``path`` is a diffusers model folder with readable JSON files."""
    if not path.exists():
        hint = f" (for a Hugging Face hub model write {HUB_PREFIX}{name})" if _looks_like_hub_id(name) else ""
        raise UsageError(f"model '{name}' not found: no such folder{hint}")
    if not path.is_dir():
        raise UsageError(f"model '{name}' is not a folder; expected a diffusers model folder")
    if not (path / "unet" / "config.json").is_file() or not (path / "scheduler").is_dir():
        raise UsageError(f"'{name}' is not a diffusers model folder; expected unet/config.json and scheduler/ inside")
    configs = {"unet": _read_json_object(path / "unet" / "config.json")}
    for part, file in (("scheduler", "scheduler_config.json"), ("text_encoder", "config.json"), ("vae", "config.json")):
        if (path / part / file).is_file():
            configs[part] = _read_json_object(path / part / file)
    check_config_sizes(configs, name)
    DiffusionModel.read_metadata(path)


MAX_PARAMETERS = 5 * 10**9  # twice SDXL's UNet: any larger config is a mistake or an attack (20 GB of weights)
MAX_TIMESTEPS = 100_000
MAX_SAMPLE_SIZE = 4096


def _counts(config: dict, key: str, default: Any, part: str, name: str) -> list[int]:
    """``config[key]`` (or ``default``) as a list, refused unless a positive int or a list of them."""
    value = config.get(key, default)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v for v in values):
        raise UsageError(f"model '{name}': {part}/config {key} must be positive integers; got {cut_text(repr(value))}")
    return values


def check_config_sizes(configs: dict[str, dict], name: str) -> None:
    """Refuse (:class:`UsageError`) a model folder whose configs ask for absurd sizes, before any tensor exists.

    The parameter count is estimated from the widths and depths (3x3 convolutions of every block, embeddings and
    the text encoder's layers, to within a small factor) and bounded by :data:`MAX_PARAMETERS`; timesteps and
    sample sizes have bounds of their own.
    """
    unet = configs["unet"]
    widths = _counts(unet, "block_out_channels", [64], "unet", name)
    depth = max(_counts(unet, "layers_per_block", 2, "unet", name))
    sample = max(_counts(unet, "sample_size", 32, "unet", name))
    if sample > MAX_SAMPLE_SIZE:
        raise UsageError(f"model '{name}': unet sample_size {sample} is beyond {MAX_SAMPLE_SIZE}")
    estimate = sum(36 * (depth + 1) * w * w for w in widths)
    if unet.get("num_class_embeds") is not None:
        estimate += _counts(unet, "num_class_embeds", 1, "unet", name)[0] * widths[0] * 4
    encoder = configs.get("text_encoder")
    if encoder is not None:
        hidden = _counts(encoder, "hidden_size", 512, "text_encoder", name)[0]
        estimate += 12 * _counts(encoder, "num_hidden_layers", 12, "text_encoder", name)[0] * hidden * hidden
        estimate += (_counts(encoder, "vocab_size", 49408, "text_encoder", name)[0]
                     + _counts(encoder, "max_position_embeddings", 77, "text_encoder", name)[0]) * hidden
    vae = configs.get("vae")
    if vae is not None:
        vae_depth = max(_counts(vae, "layers_per_block", 1, "vae", name))
        estimate += sum(72 * (vae_depth + 1) * w * w for w in _counts(vae, "block_out_channels", [64], "vae", name))
    if estimate > MAX_PARAMETERS:
        raise UsageError(f"model '{name}': its configs ask for about {estimate:.2g} parameters; at most "
                         f"{MAX_PARAMETERS:.0e} are loaded (check block_out_channels, layers and embedding sizes)")
    timesteps = _counts(configs.get("scheduler", {}), "num_train_timesteps", 1000, "scheduler", name)[0]
    if timesteps > MAX_TIMESTEPS:
        raise UsageError(f"model '{name}': scheduler num_train_timesteps {timesteps} is beyond {MAX_TIMESTEPS}")


def check_record(model: DiffusionModel, location: str, local: bool, name: str) -> DiffusionModel:
    """``model`` if it is what its folder's record says it is (the fingerprint ``save`` wrote), else a
    :class:`UsageError`: a file changed after saving (weights, a text model's tokenizer or VAE) is refused."""
    recorded = DiffusionModel.read_metadata(location).get("fingerprint") if local else None
    if recorded is not None and recorded != model.fingerprint():
        raise UsageError(f"model '{name}' does not match its record (erasediff.json): a file was changed or replaced "
                         f"after it was saved (fingerprint {model.fingerprint()[:12]}, recorded {str(recorded)[:12]})")
    return model


LOAD_ERRORS = (OSError, ValueError, RuntimeError, OverflowError, SafetensorError)  # what a broken folder raises


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_noise_predictor(unet: UNet2DModel | UNet2DConditionModel, scheduler: DDPMScheduler, name: str) -> None:
    """Raise :class:`UsageError` unless ``unet`` predicts finite noise of its input's shape on a valid schedule."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type != "epsilon":
        raise UsageError(f"model '{name}' predicts '{prediction_type}'; only 'epsilon' (noise) prediction is supported")
    betas = scheduler.betas
    if not len(betas) or not bool(torch.all(torch.isfinite(betas) & (betas >= 0) & (betas < 1))):
        raise UsageError(f"model '{name}' has an invalid noise schedule; expected timesteps with betas in [0, 1)")
    if unet.config.out_channels != unet.config.in_channels:
        raise UsageError(f"model '{name}' has {unet.config.in_channels} input channels but "
                         f"{unet.config.out_channels} output channels; expected a noise predictor (equal)")
    check_finite(unet, name)


def check_finite(module: torch.nn.Module, name: str, part: str = "") -> None:
    """Raise :class:`UsageError` naming the first non-finite weight of ``module`` (a part of model ``name``)."""
    for tensor_name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"model '{name}' has non-finite weights in {part}{tensor_name}")

