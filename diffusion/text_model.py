"""The text-to-image model under audit: a Stable-Diffusion-layout pipeline behind the :class:`DiffusionModel` adapter.

diffusers ``UNet2DConditionModel`` + transformers ``CLIPTextModel`` and ``CLIPTokenizer`` + a DDPM noise schedule,
with an optional ``AutoencoderKL`` (then the diffusion runs on its latents, as Stable Diffusion's does: Rombach et
al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022). Conditioning is a batch of token
ids (B, L) where the class-conditional model takes class ids (B,), so ``unlearn/`` and ``attacks/`` drive both
through the same calls. Sampling uses classifier-free guidance (Ho and Salimans, arXiv 2207.12598, 2022).
Saved and loaded in ``StableDiffusionPipeline``'s folder layout, weights from safetensors only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from .captions import CaptionDropout, ClassCaptions, check_survives_tokenization, token_ids
from .data import ImageDataset, LabeledImages
from .errors import UsageError
from .io import read_text_file, write_json
from .model import (
    LOAD_ERRORS,
    MAX_JSON_BYTES,
    DiffusionModel,
    ImageBatch,
    check_block_out_channels,
    check_finite,
    check_noise_predictor,
    check_record,
    first_line,
    model_location,
)
from .params import cut_text
from .seeding import derive_seed, seeded_normal
from .splits import ForgetSpec, ForgetTask, Splits

# Which UNet parameters an erasure trains (ESD, Gandikota et al. ICCV 2023: ESD-x = the cross-attention, ESD-u =
# everything else). Cross-attention modules are diffusers' ``attn2``; the text encoder is never trained by them.
TRAINABLE_MODULES = ("full", "cross_attention", "non_cross_attention")
# Classifier-free guidance of sampling. On the built-in text model (judged on held-out paraphrases, 50 per digit):
# scale 1 gives 89% accuracy (FD 8.2), 2 gives 99.2% (FD 5.8), 3 gives 100% at a far larger FD (19.9 at 1500 steps).
DEFAULT_GUIDANCE = 2.0


class TextConditionedUNet(torch.nn.Module):
    """The trainable denoiser of a text model: the text encoder and the UNet as one module.

    ``forward(sample (B, C, H, W), timestep (B,), token_ids (B, L))`` encodes the tokens (B, L, D) and returns the
    UNet's output; the token ids come third, where a class-conditional UNet takes its class ids, so training (which
    calls the denoiser positionally), copying and fingerprinting treat both models alike.
    """

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    @property
    def config(self):
        """The UNet's config (sample size, channels): what a caller reads off a noise predictor."""
        return self.unet.config

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, token_ids: torch.Tensor):
        states = self.text_encoder(token_ids)[0]
        return self.unet(sample, timestep, encoder_hidden_states=states)


def build_text_components(
    tokenizer: CLIPTokenizer,
    sample_size: int = 8,
    channels: int = 1,
    block_out_channels: Sequence[int] = (32, 64),
    text_width: int = 32,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """A small UNet2DConditionModel (cross-attention in every block below full resolution and in the middle block,
    where attention over the pixels is cheap) and a 2-layer CLIP text encoder of width ``text_width`` over
    ``tokenizer``'s vocabulary (random weights)."""
    check_block_out_channels(block_out_channels)
    blocks = len(block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(block_out_channels), layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",),
        cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=min(8, block_out_channels[0]),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=2 * text_width, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return unet, text_encoder


class TextDiffusionModel(DiffusionModel):
    """A text-to-image noise predictor eps_theta(z_t, t, tokens) with its DDPM schedule, tokenizer and optional VAE.

    ``unet`` is a :class:`TextConditionedUNet` (UNet and text encoder). With a ``vae``, the images a caller gives
    (``encode``) and gets back (``sample``) are pixels (B, 3, H, W) in [-1, 1], and the diffusion runs on latents
    (B, 4, H/8, W/8) scaled by the VAE's ``scaling_factor``; without one it runs on the pixels.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: DDPMScheduler,
        vae: AutoencoderKL | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__(TextConditionedUNet(unet, text_encoder), scheduler, device)
        self.tokenizer = tokenizer
        self.vae = vae.to(self.device).eval().requires_grad_(False) if vae is not None else None

    @property
    def num_classes(self) -> None:
        return None

    @property
    def conditioning(self) -> str:
        return "text"

    @property
    def recipe_kind(self) -> str:
        return "text"

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        if self.vae is None:
            return self.image_shape
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        _, height, width = self.image_shape
        return (int(self.vae.config.in_channels), height * factor, width * factor)

    def require_class_conditioning(self, what: str) -> int:
        raise UsageError(f"{what} needs a class-conditional model; this is a text-to-image model "
                         "(name what to erase with --forget-concept)")

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids (B, L) of ``prompts``, padded and cut to the tokenizer's length, on the CPU."""
        return token_ids(self.tokenizer, prompts)

    def predict_noise(self, x_t: ImageBatch, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(z_t, t, tokens): (B, C, H, W) from z_t (B, C, H, W), t (B,) and token ids ``labels`` (B, L)."""
        if labels is None or labels.ndim != 2:
            raise UsageError("a text-to-image model is conditioned on prompts; give token ids of shape (B, L)")
        return self.unet(x_t, t, labels.to(self.device)).sample

    def guided_noise(self, x_t: ImageBatch, t: torch.Tensor, tokens: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance: eps_u + ``scale`` (eps_c - eps_u), eps_u under the empty prompt, from one
        forward over both; x_t (B, C, H, W), one timestep ``t`` (a 0-d tensor) for all, token ids (B, L)."""
        empty = self.tokenize([""]).to(self.device).expand(len(x_t), -1)
        both = torch.cat([empty, tokens.to(self.device)])
        eps_u, eps_c = self.predict_noise(torch.cat([x_t, x_t]), t.expand(2 * len(x_t)).to(self.device),
                                          both).chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    def prompt_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The text encoder's output (B, L, D) for token ids (B, L): what the UNet's cross-attention reads."""
        return self.unet.text_encoder(tokens.to(self.device))[0]

    def guided_noise_from_states(self, x_t: ImageBatch, t: torch.Tensor, states: torch.Tensor,
                                 scale: float) -> torch.Tensor:
        """:meth:`guided_noise` conditioned on text-encoder outputs ``states`` (B, L, D) in place of token ids (an
        attacker's embeddings that no prompt gives); eps_u under the empty prompt, as there."""
        empty = self.prompt_states(self.tokenize([""])).expand(len(x_t), -1, -1)
        both = torch.cat([empty, states.to(self.device, empty.dtype)])
        eps_u, eps_c = self.unet.unet(torch.cat([x_t, x_t]), t.expand(2 * len(x_t)).to(self.device),
                                      encoder_hidden_states=both).sample.chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def encode(self, images: ImageBatch) -> torch.Tensor:
        """The diffusion's data for pixel ``images`` (B, C, H, W) in [-1, 1]: the VAE posterior's mean times its
        scaling factor (B, 4, H/8, W/8), or the pixels themselves without a VAE."""
        if self.vae is None:
            return images
        latents = self.vae.encode(images.to(self.device)).latent_dist.mean
        return (latents * self.vae.config.scaling_factor).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> ImageBatch:
        """Pixels (B, C, H, W) in [-1, 1] for the diffusion's data ``latents`` (the inverse of :meth:`encode`)."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        return self.vae.decode(latents.to(self.device) / self.vae.config.scaling_factor).sample.clamp(-1, 1).cpu()

    def classes_known(self, wordings: ClassCaptions | None, what: str) -> int | None:
        """How many classes the data's ``wordings`` name (None without them: generating then asks for them)."""
        return None if wordings is None else wordings.num_classes

    def conditions_for(self, labels: torch.Tensor, wordings: ClassCaptions | None = None) -> list[str]:
        """A prompt per class label: the class's held-out wordings in the data's ``wordings`` (required)."""
        if wordings is None:
            raise UsageError("a text-to-image model is asked for a class in words: give the data's class wordings "
                             "(ImageDataset.class_wordings)")
        return wordings.heldout_prompts(labels.tolist())

    def check_request(self, classes: Sequence[int], concept: Sequence[str]) -> None:
        """Raise :class:`UsageError` for classes named without a concept: a text model erases a concept (or
        images)."""
        if classes and not concept:
            raise UsageError("a text-to-image model erases a concept: name it with --forget-concept TEXT (or delete "
                             "images with --forget-ids); --forget-class is for class-conditional models")

    def forget_task(self, dataset: ImageDataset, splits: Splits, spec: ForgetSpec, seed: int = 0) -> ForgetTask:
        """The captioned :class:`ForgetTask` of ``spec`` (:func:`text_task`)."""
        self.check_request(spec.classes, spec.concept)
        return text_task(dataset, splits, spec, self, seed)

    def data_view(self, dataset: ImageDataset, seed: int) -> Callable[[LabeledImages], LabeledImages]:
        """Images of ``dataset`` encoded, labelled by their training captions' token ids
        (:func:`captioned`)."""
        return lambda subset: captioned(subset, self, dataset, seed)

    def check_task(self, task: ForgetTask, what: str = "unlearning") -> None:
        """Raise :class:`UsageError` unless ``task`` is a captioned one (a concept's, with its anchor) of images
        this model takes."""
        if task.anchor is None:
            self.require_class_conditioning(what)
        task.check_shape(self.image_shape, what)

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | Sequence[str] | None,
        *,
        seed: int,
        ids: Sequence[int] | None = None,
        num: int | None = None,
        steps: int = 50,
        method: str = "ddim",
        batch_size: int = 256,
        guidance_scale: float = DEFAULT_GUIDANCE,
        embeddings: torch.Tensor | None = None,
    ) -> ImageBatch:
        """Images (B, C, H, W) in [-1, 1] on the CPU for prompts (a list of B strings) or token ids (B, L), by
        deterministic DDIM with classifier-free guidance: eps_u + ``guidance_scale`` (eps_c - eps_u), eps_u under
        the empty prompt. The starting noise of image i derives from (seed, ids[i]), as for the image models.
        ``embeddings`` (B, L, D), given in place of prompts (``labels`` None), are text-encoder outputs to condition
        on (:meth:`guided_noise_from_states`)."""
        if method != "ddim":
            raise UsageError(f"a text-to-image model samples with 'ddim'; got '{method}'")
        if (labels is None) == (embeddings is None):
            raise UsageError("a text-to-image model needs prompts to sample" if labels is None else
                             "give prompts or embeddings to sample, not both")
        tokens = embeddings if embeddings is not None else (
            labels if isinstance(labels, torch.Tensor) else self.tokenize(labels))
        ids = list(range(len(tokens))) if ids is None else [int(i) for i in ids]
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        was_training = self.unet.training
        self.unet.eval()
        out = []
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start : start + batch_size].to(self.device)
            x = seeded_normal(seed, ids[start : start + batch_size], self.image_shape, stream="sample").to(self.device)
            for t in scheduler.timesteps:
                eps = (self.guided_noise_from_states(x, t, batch, guidance_scale) if embeddings is not None
                       else self.guided_noise(x, t, batch, guidance_scale))
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            out.append(self.decode(x))
        self.unet.train(was_training)
        return torch.cat(out)

    # ------------------------------------------------------------------ training scope, copies and files
    def train_only(self, modules: str) -> None:
        """Let only the UNet's ``modules`` (one of :data:`TRAINABLE_MODULES`) require gradients; the text encoder
        and the VAE are frozen (what ESD and EraseDiff's SD code train)."""
        if modules not in TRAINABLE_MODULES:
            raise UsageError(f"trainable modules must be one of {', '.join(TRAINABLE_MODULES)}; got {modules!r}")
        self.unet.text_encoder.requires_grad_(False)
        for name, parameter in self.unet.unet.named_parameters():
            cross = "attn2" in name
            parameter.requires_grad_(modules == "full" or (modules == "cross_attention") == cross)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.unet.enable_gradient_checkpointing()

    def reinitialized(self, seed: int) -> TextDiffusionModel:
        """The same architecture, tokenizer, schedule and VAE with a freshly initialised UNet and text encoder."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel.from_config(self.unet.unet.config)
            text_encoder = CLIPTextModel(self.unet.text_encoder.config)
        return TextDiffusionModel(unet, text_encoder, self.tokenizer, copy.deepcopy(self.scheduler), self.vae,
                                  self.device)

    def training_conditions(self, caption_dropout: float):
        """What training on this model's (image, caption) pairs feeds it: the captions with
        :class:`~diffusion.captions.CaptionDropout`."""
        return CaptionDropout(self.tokenize([""])[0], caption_dropout)

    def copy(self) -> TextDiffusionModel:
        twin = copy.copy(self)
        twin.unet = copy.deepcopy(self.unet)
        twin.scheduler = copy.deepcopy(self.scheduler)
        return twin

    def _identity(self) -> tuple[dict[str, torch.Tensor], bytes]:
        """What turns a prompt into an image: the UNet and text encoder (``self.unet`` holds both), the VAE when there
        is one, and the tokenizer's vocabulary, merges and length."""
        state, _ = super()._identity()
        if self.vae is not None:
            state.update({f"vae.{name}": tensor for name, tensor in self.vae.state_dict().items()})
        bpe = json.loads(self.tokenizer.backend_tokenizer.to_str())["model"]
        return state, json.dumps([bpe, self.tokenizer.model_max_length], sort_keys=True).encode()

    def save(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write a diffusers ``StableDiffusionPipeline`` folder (safetensors, no safety checker) and
        ``erasediff.json`` with ``metadata``."""
        directory = Path(directory)
        with quiet_libraries():  # the import (image processors), a null VAE and each shard written would be logged
            from diffusers import StableDiffusionPipeline

            pipeline = StableDiffusionPipeline(
                vae=self.vae, text_encoder=self.unet.text_encoder, tokenizer=self.tokenizer, unet=self.unet.unet,
                scheduler=self.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
            pipeline.save_pretrained(directory, safe_serialization=True)
        write_json(directory / "erasediff.json", {"fingerprint": self.fingerprint(), **(metadata or {})})

    @classmethod
    def load(cls, source: str | Path, device: torch.device | str | None = None) -> TextDiffusionModel:
        """Load a ``StableDiffusionPipeline`` folder or hub model (``hf://owner/name``); safetensors only.

        The scheduler is read as a DDPM schedule (SD's PNDM config holds the same betas). A :class:`UsageError`
        names a part that is missing or cannot be read.
        """
        name = str(source)
        location, local = model_location(source)
        try:
            with quiet_libraries(), torch.random.fork_rng(devices=[]):
                unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", use_safetensors=True,
                                                            local_files_only=local)
                text_encoder = CLIPTextModel.from_pretrained(location, subfolder="text_encoder", use_safetensors=True,
                                                             local_files_only=local)
                vae = None
                if _has_component(location, local, "vae"):
                    vae = AutoencoderKL.from_pretrained(location, subfolder="vae", use_safetensors=True,
                                                        local_files_only=local)
                tokenizer = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer", local_files_only=local)
                scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler", local_files_only=local)
        except LOAD_ERRORS as error:
            raise UsageError(f"could not load text-to-image model '{name}': {first_line(error)}") from error
        check_noise_predictor(unet, scheduler, name)
        check_tokenizer(tokenizer, text_encoder, name)
        check_finite(text_encoder, name, "text_encoder.")
        if vae is not None:
            check_finite(vae, name, "vae.")
        return check_record(cls(unet.eval(), text_encoder.eval(), tokenizer, scheduler, vae, device), location, local,
                            name)


def training_captions(dataset: ImageDataset, ids: torch.Tensor, model: TextDiffusionModel, seed: int) -> torch.Tensor:
    """The training caption of each image ``ids`` of ``dataset``: token ids (N, L). Its own caption when the data
    has captions, else one training wording of its class drawn from (``seed``, sample id)."""
    if dataset.captions is not None:
        return model.tokenize([dataset.captions[i] for i in ids.tolist()])
    wordings, texts = dataset.class_wordings, []
    for label, sample_id in zip(dataset.labels[ids].tolist(), ids.tolist()):
        generator = torch.Generator().manual_seed(derive_seed(seed, "caption", sample_id))
        choice = int(torch.randint(len(wordings.train_templates), (1,), generator=generator))
        texts.append(wordings.captions(label)[choice])
    return model.tokenize(texts)


def captioned(subset: LabeledImages, model: TextDiffusionModel, dataset: ImageDataset, seed: int,
              prompts: Sequence[str] | None = None) -> LabeledImages:
    """``subset`` (images of ``dataset``) as the text model sees it: images encoded
    (:meth:`TextDiffusionModel.encode`), labels replaced by token ids (N, L) of ``prompts`` (cycled) or, without
    prompts, of each image's training caption (:func:`training_captions`)."""
    if prompts:
        tokens = model.tokenize([prompts[i % len(prompts)] for i in range(len(subset))])
    else:
        tokens = training_captions(dataset, subset.ids, model, seed)
    return LabeledImages(model.encode(subset.images), tokens, subset.ids)


def text_task(dataset: ImageDataset, splits: Splits, spec: ForgetSpec, model: TextDiffusionModel,
              seed: int = 0) -> ForgetTask:
    """The :class:`ForgetTask` of ``spec`` for a text model: the concept's images under the concept prompts (a
    sample deletion: the images under their own captions), the rest under their captions, and the anchor."""
    spec.validate(dataset.labels, splits, dataset.num_classes)
    for prompt in spec.concept:
        check_survives_tokenization(model.tokenizer, prompt, "the concept prompt")
    check_survives_tokenization(model.tokenizer, spec.anchor, "the anchor prompt")
    forget = dataset.select(spec.forget_ids(dataset.labels, splits))
    retain = dataset.select(spec.retain_ids(dataset.labels, splits))
    return ForgetTask(
        forget=captioned(forget, model, dataset, seed, spec.concept),
        retain=captioned(retain, model, dataset, seed),
        forget_classes=spec.classes,
        num_classes=dataset.num_classes,
        anchor=model.tokenize([spec.anchor])[0],
    )


def check_tokenizer(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, name: str) -> None:
    """Raise :class:`UsageError` unless the tokenizer can feed the text encoder: words beyond its special tokens
    (a missing tokenizer folder loads as an empty one), ids within the encoder's table, and a length within its
    positions (an absurd length would overflow)."""
    size, table = len(tokenizer), text_encoder.config.vocab_size
    if size <= len(tokenizer.all_special_tokens):
        raise UsageError(f"model '{name}' has a tokenizer of {size} token(s), its special tokens only: the "
                         "tokenizer folder is missing or empty")
    if size > table:
        raise UsageError(f"model '{name}' has a tokenizer of {size} tokens but a text encoder of {table}")
    positions = text_encoder.config.max_position_embeddings
    if not 1 <= tokenizer.model_max_length <= positions:
        raise UsageError(f"model '{name}' has a tokenizer length of {cut_text(str(tokenizer.model_max_length), 30)}; "
                         f"expected 1 to {positions} (the text encoder's positions)")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers and transformers log errors only and show no progress bars within the block (their notes on
    saving and loading would interleave with ours)."""
    diffusers_level, transformers_level = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(diffusers_level)
        transformers_logging.set_verbosity(transformers_level)
        if bars:
            transformers_logging.enable_progress_bar()


def _has_component(location: str, local: bool, component: str) -> bool:
    """Whether the pipeline's ``model_index.json`` names a ``component`` (SD's ``vae`` may be null)."""
    index = read_model_index(location, local)
    entry = index.get(component)
    return isinstance(entry, list) and entry[0] is not None


def read_model_index(location: str, local: bool) -> dict:
    """A pipeline folder's or hub model's ``model_index.json`` ({} when it has none, or the hub cannot be reached:
    loading the model itself then says what is wrong)."""
    if local:
        path = Path(location) / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(location, "model_index.json"))
        except Exception:  # noqa: BLE001 - offline, unknown id, no such file: the model's own load reports it
            return {}
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_text_file(path, "model index", MAX_JSON_BYTES, "a JSON object"))
    except (ValueError, RecursionError) as error:
        raise UsageError(f"'{path}' is not a readable JSON file: {error}") from None
    return data if isinstance(data, dict) else {}


def is_text_to_image(location: str, local: bool) -> bool:
    """Whether a model folder or hub id holds a text-to-image pipeline (a ``text_encoder`` beside its UNet)."""
    return _has_component(location, local, "text_encoder")
