"""Whether a model belongs with the data and member split it is used on, from what the model records.

Every model erasediff writes carries ``erasediff.json`` with the data fingerprint and the member split it was
trained on. Using it with other data gives numbers that mean nothing, so a mismatch is an error unless the user
says it is intended (``--allow-other-data``). A hub model records nothing and is checked on shape and classes only.
"""

from __future__ import annotations

from .data import ImageDataset, load_dataset
from .errors import UsageError
from .model import DiffusionModel
from .splits import Splits


def load_data_for_model(data: str, model: DiffusionModel) -> ImageDataset:
    """``data`` loaded at the model's image shape (C, H, W) (in pixels for a latent model); its classes must be the
    model's."""
    channels, height, width = model.pixel_shape
    if height != width:
        raise UsageError(f"the model takes {height}x{width} images; only square images are supported")
    dataset = load_dataset(data, image_size=height, channels=channels)
    if dataset.image_shape != model.pixel_shape:
        raise UsageError(f"data '{data}' has images of shape {dataset.image_shape} but the model takes "
                         f"{model.pixel_shape}")
    if model.num_classes is not None and model.num_classes != dataset.num_classes:
        raise UsageError(f"the model is conditioned on {model.num_classes} classes but data '{data}' has "
                         f"{dataset.num_classes}; give the data the model was trained on")
    return dataset


def require_member_split(metadata: dict, source: str, declared: bool) -> None:
    """Refuse (:class:`UsageError`) a model that records no member split when the user declares none: a split drawn
    for it would be invented, and every membership number meaningless (three quarters of its training images scored
    as never seen)."""
    if "splits" not in metadata and not declared:
        raise UsageError(f"model '{source}' records no member split (erasediff did not train it): declare the images "
                         "it was trained on with --members and images of the same kind it never saw with --heldout "
                         "(lists of files under --data, or folders inside it)")


def check_provenance(
    metadata: dict, source: str, dataset: ImageDataset, splits: Splits | None, *, allow_other_data: bool = False
) -> None:
    """Raise :class:`UsageError` when ``metadata`` (a model's erasediff.json) names other data or another
    member split than ``dataset`` / ``splits`` (None: not checked); ``allow_other_data`` skips both checks."""
    if allow_other_data:
        return
    recorded_data = (metadata.get("data") or {}).get("fingerprint")
    if recorded_data and recorded_data != dataset.fingerprint():
        recorded_name = metadata["data"].get("name", "?")
        raise UsageError(f"model '{source}' was trained on other data ('{recorded_name}', fingerprint "
                         f"{recorded_data[:12]}) than '{dataset.name}' ({dataset.fingerprint()[:12]}); give the "
                         "same data, or pass --allow-other-data if this is intended")
    recorded_split = metadata.get("splits")
    if splits is not None and recorded_split and (
        recorded_split.get("members_sha256") != splits.to_dict()["members_sha256"]
    ):
        raise UsageError(f"model '{source}' was trained on another member split than split seed {splits.seed}, "
                         f"member fraction {splits.member_fraction} gives; pass the split it records "
                         f"({recorded_split.get('seed', '?')}, {recorded_split.get('member_fraction', '?')})")
