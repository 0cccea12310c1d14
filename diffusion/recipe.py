"""How a model was trained, so that a reference can be trained the same way without the forget set.

The exact-unlearning reference of a model trained from scratch is a retrain from scratch (Bourtoule et al.,
"Machine Unlearning", IEEE S&P 2021); of a fine-tuned model, its base fine-tuned again on the remaining fine-tuning
data with the same recipe, which costs a fine-tune, not a pretraining. ``erasediff train --base`` records the
base and the recipe in the fine-tuned model's ``erasediff.json``; a model fine-tuned elsewhere states them in a
recipe file (YAML)::

    base: path/to/base-model        # or hf://owner/name; leave out for a model trained from scratch
    steps: 300
    lr: 1.0e-4
    batch_size: 32
    lora_rank: 8                    # 0 or left out: every weight was trained
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .params import short_repr
from .training import TrainConfig

# the recipe file's keys: the base, and the training fields a fine-tune or a retrain from scratch uses (the
# architecture is the audited model's own)
RECIPE_FILE_KEYS = ("base", "steps", "batch_size", "lr", "weight_decay", "ema_decay", "lora_rank", "caption_dropout")


@dataclass(frozen=True)
class Recipe:
    """A model's training recipe.

    Attributes:
        train: steps, batch size, learning rate, EMA decay and LoRA rank (its architecture fields are unused: a
            reference takes the audited model's architecture).
        base: the model it was fine-tuned from (a folder or ``hf://owner/name``); None when trained from scratch.
        base_fingerprint: the base's weights when it was fine-tuned (:meth:`DiffusionModel.fingerprint`); None
            when not recorded (a recipe file).
        source: where the recipe was read, in words ("the record of model 'runs/ft'", "recipe file 'r.yaml'").
    """

    train: TrainConfig
    base: str | None
    base_fingerprint: str | None
    source: str

    @property
    def fine_tuned(self) -> bool:
        return self.base is not None

    def describe(self) -> str:
        """The recipe in a few words, for the report ("fine-tuned from 'runs/base' (LoRA rank 8), 300 steps")."""
        how = f"fine-tuned from '{self.base}'" if self.fine_tuned else "trained from scratch"
        if self.train.lora_rank:
            how += f" (LoRA rank {self.train.lora_rank})"
        return f"{how}, {self.train.steps} steps, batch {self.train.batch_size}, lr {self.train.lr:g} ({self.source})"

    def to_dict(self) -> dict:
        return {"base": self.base, "base_fingerprint": self.base_fingerprint, "train": self.train.to_dict(),
                "source": self.source}

    @classmethod
    def from_record(cls, metadata: dict, model: str) -> Recipe | None:
        """The fine-tuning recipe a model ``erasediff train --base`` wrote records, or None (trained from scratch,
        or no record)."""
        base, config = metadata.get("base"), metadata.get("train_config")
        if not (isinstance(base, dict) and isinstance(config, dict)):
            return None
        try:
            train = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        except (TypeError, UsageError) as error:
            raise UsageError(f"model '{model}' records an unreadable recipe: {error}") from None
        return cls(train, str(base.get("source")), base.get("fingerprint"), f"the record of model '{model}'")

    @classmethod
    def from_mapping(cls, data: object, source: str, kind: str) -> Recipe:
        """A recipe file's mapping (keys :data:`RECIPE_FILE_KEYS`) for a model of ``kind`` ("class" or "text");
        a :class:`UsageError` names an unknown key or a bad value."""
        if not isinstance(data, dict):
            raise UsageError(f"{source} must hold a mapping of keys ({', '.join(RECIPE_FILE_KEYS)}); got "
                             f"{short_repr(data)}")
        unknown = [key for key in data if key not in RECIPE_FILE_KEYS]
        if unknown:
            raise UsageError(f"{source}: unknown key {short_repr(unknown[0])}; allowed keys: "
                             f"{', '.join(RECIPE_FILE_KEYS)}")
        base = data.get("base")
        if base is not None and (not isinstance(base, str) or not base):
            raise UsageError(f"{source}: 'base' must be the path or hf:// id of the base model; got "
                             f"{short_repr(base)}")
        fields = {key: value for key, value in data.items() if key != "base"}
        try:
            train = TrainConfig.for_kind(kind, **fields)
        except UsageError as error:
            raise UsageError(f"{source}: {error}") from None
        if train.lora_rank and base is None:
            raise UsageError(f"{source}: a LoRA (lora_rank {train.lora_rank}) adapts a base model; give its 'base'")
        return cls(train, base, None, source)
