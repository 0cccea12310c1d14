"""Image datasets: scikit-learn's bundled digits (the built-in default) and a folder of class sub-folders."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .captions import ClassCaptions, class_captions
from .errors import UsageError
from .io import read_text_file
from .params import cut_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_IMAGE_SIZE = 2048  # pixels a side: Stable Diffusion trains at 512-1024; beyond, the images alone fill memory
MAX_CAPTIONS_BYTES = 64 * 2**20  # a caption per image: far more than any folder this project trains on
CAPTIONS_FILE = "metadata.jsonl"  # the Hugging Face image-folder layout: {"file_name": ..., "text": ...} per line
MAX_IMAGE_PIXELS = 8192 * 8192  # larger images are refused (a decompression bomb costs memory)


@dataclass(frozen=True, eq=False)
class LabeledImages:
    """A subset of a dataset: images (N, C, H, W) in [-1, 1], labels (N,) and their sample ids (N,).

    Sample ids are dataset indices; attacks derive their noise from them, so a sample gets the same noise
    in every batch and on every model.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> LabeledImages:
        """Rows ``index`` (a slice, a boolean mask or positions) of this subset."""
        return LabeledImages(self.images[index], self.labels[index], self.ids[index])


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images in [-1, 1] with integer class labels (and, optionally, a caption per image).

    Attributes:
        images: float32 tensor of shape (N, C, H, W), values in [-1, 1].
        labels: int64 tensor of shape (N,).
        class_names: one name per class id.
        name: a short description of where the data came from (recorded in outputs).
        captions: one caption per image (what a text-to-image model was trained on), or None: a text model then
            sees captions worded from the class names (:attr:`class_wordings`).
        files: an image folder's file of each image, its path under the folder ("cat/001.png"); None for the
            bundled digits. Not part of :meth:`fingerprint` (moving a folder keeps its models valid).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    captions: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"images must be (N, C, H, W) and labels (N,); got {tuple(self.images.shape)} and "
                f"{tuple(self.labels.shape)}"
            )
        if self.captions is not None and len(self.captions) != len(self.labels):
            raise ValueError(f"captions must be one per image; got {len(self.captions)} for {len(self.labels)}")
        if self.files is not None and len(self.files) != len(self.labels):
            raise ValueError(f"files must be one per image; got {len(self.files)} for {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def class_wordings(self) -> ClassCaptions:
        """How captions name the classes (:func:`~diffusion.captions.class_captions`)."""
        return class_captions(self.class_names)

    def select(self, ids) -> LabeledImages:
        """The images and labels with the given sample ids (dataset indices)."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        return LabeledImages(self.images[ids], self.labels[ids], ids)

    def fingerprint(self) -> str:
        """SHA-256 over the images, labels and captions: identifies the data a model or split was made from."""
        digest = hashlib.sha256()
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        if self.captions is not None:
            digest.update(json.dumps(self.captions).encode())
        return digest.hexdigest()

    def ids_of_files(self, files: Sequence[str], what: str) -> np.ndarray:
        """The sample ids (in the order given) of ``files``, each an image's path under the data folder
        (:attr:`files`); a :class:`UsageError` naming ``what`` ("the canary images") and the first file that is not
        one of the data's images or is given twice, or when the data is not a folder."""
        if self.files is None:
            raise UsageError(f"{what} are named by file, but the data '{self.name}' has no files (the bundled "
                             "digits): give sample ids, or use an image folder")
        index = {name: i for i, name in enumerate(self.files)}
        ids, seen = [], set()
        for name in files:
            key = Path(name).as_posix().removeprefix("./")
            if key not in index:
                raise UsageError(f"{what}: '{cut_text(name, 120)}' is not an image of the data folder; expected a "
                                 "path under it such as '" + self.files[0] + "'")
            if key in seen:
                raise UsageError(f"{what}: '{cut_text(name, 120)}' is given twice")
            seen.add(key)
            ids.append(index[key])
        if not ids:
            raise UsageError(f"{what}: no file given")
        return np.asarray(ids, dtype=np.int64)


def read_file_list(path: str, what: str, data_root: str | Path) -> tuple[str, ...]:
    """The files a list names (one path under the data folder ``data_root`` per line, ``#`` starts a comment), or,
    for a folder inside the data folder, the PNG and JPEG images in it (sorted, as paths under ``data_root``); a
    :class:`UsageError` naming ``what`` when it is unreadable, empty or a folder outside the data."""
    folder = Path(path)
    if folder.is_dir():
        root = Path(data_root).resolve()
        if not folder.resolve().is_relative_to(root):
            raise UsageError(f"{what}: the folder '{path}' is not inside the data folder '{data_root}'; give a folder "
                             "of the data's images or a list of their paths")
        files = tuple(p.resolve().relative_to(root).as_posix() for p in sorted(folder.rglob("*"))
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        text = read_text_file(path, f"{what} list", 10 * 2**20, "a text file of one image path per line")
        names = (line.split("#", 1)[0].strip() for line in text.splitlines())
        files = tuple(name for name in names if name)
    if not files:
        raise UsageError(f"{what} '{path}' names no image; expected one image path per line (or a folder of images)")
    return files


def load_digits_dataset() -> ImageDataset:
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images, 10 classes, no download.

    Pixel values 0..16 are scaled to [-1, 1]; images have shape (1797, 1, 8, 8).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageDataset(images, labels, tuple(str(n) for n in bunch.target_names), "sklearn-digits")


def _read_image(path: Path, mode: str, size: int) -> np.ndarray:
    """One image file as a float32 array (H, W) or (H, W, 3) in [-1, 1]; a :class:`UsageError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UsageError(f"image '{path}' has {image.width}x{image.height} pixels; "
                                     f"at most {MAX_IMAGE_PIXELS:,} are read")
                image = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    except UsageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        reason = "not an image" if isinstance(error, UnidentifiedImageError) else str(error).strip().split("\n")[0]
        raise UsageError(f"cannot read image '{path}': {reason or type(error).__name__}") from None


def load_image_folder(root: str | Path, size: int, channels: int = 1) -> ImageDataset:
    """Load ``root/<class name>/*.png|jpg`` into an :class:`ImageDataset`.

    Class ids follow the sorted sub-folder names. Each image is converted to grey (``channels=1``) or RGB
    (``channels=3``), resized to ``size`` x ``size`` and scaled to [-1, 1]. A ``root/metadata.jsonl`` (the Hugging
    Face image-folder layout that diffusers' text-to-image training reads) gives each image its caption: one JSON
    object per line with ``file_name`` (the path under ``root``) and ``text``.
    """
    root = Path(root)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise UsageError(f"image_size must be a whole number of pixels from 1 to {MAX_IMAGE_SIZE}; got {size!r}")
    if root.exists() and not root.is_dir():
        raise UsageError(f"image folder '{root}' is not a folder; expected a folder with one sub-folder per class")
    if not root.is_dir():
        raise UsageError(f"image folder '{root}' does not exist; expected a folder with one sub-folder per class")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 or 3; got {channels}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise UsageError(f"image folder '{root}' has no class sub-folders; expected root/<class>/<image>.png")
    mode = "L" if channels == 1 else "RGB"
    arrays, labels, paths = [], [], []
    for class_id, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"class folder '{class_dir}' has no PNG or JPEG images")
        for path in files:
            array = _read_image(path, mode, size)
            arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
            labels.append(class_id)
            paths.append(path)
    images = torch.from_numpy(np.stack(arrays))
    files = tuple(path.relative_to(root).as_posix() for path in paths)
    captions = _read_captions(root, list(files))
    return ImageDataset(images, torch.tensor(labels), tuple(p.name for p in class_dirs), f"imagefolder:{root}",
                        captions, files)


def _read_captions(root: Path, files: list[str]) -> tuple[str, ...] | None:
    """The caption of each of ``files`` (paths under ``root``) from ``root/metadata.jsonl``; None without that file.
    A :class:`UsageError` names a malformed line, a caption of no image, or the first image without a caption."""
    metadata = root / CAPTIONS_FILE
    if not os.path.lexists(metadata):
        return None
    lines = read_text_file(metadata, "caption file", MAX_CAPTIONS_BYTES,
                           'JSON lines {"file_name": ..., "text": ...}').splitlines()
    wanted, captions, lines_of = set(files), {}, {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("file_name"), str) and isinstance(row.get("text"), str)):
            raise UsageError(f"'{metadata}' line {number}: expected a JSON object with string 'file_name' and "
                             "'text'")
        name = Path(row["file_name"]).as_posix()
        if name not in wanted:
            raise UsageError(f"'{metadata}' line {number}: '{cut_text(name, 80)}' is not an image of the folder")
        if name in captions:
            raise UsageError(f"'{metadata}' captions '{cut_text(name, 80)}' twice (lines {lines_of[name]} and "
                             f"{number}); give each image one caption")
        captions[name], lines_of[name] = " ".join(row["text"].split()), number
    missing = [name for name in files if name not in captions]
    if missing:
        raise UsageError(f"'{metadata}' has no caption for '{missing[0]}' ({len(missing)} image(s) without one); "
                         "caption every image or remove the file")
    return tuple(captions[name] for name in files)


def data_folder(name: str) -> str | None:
    """The folder a data name refers to (an input no output may overwrite), None for the bundled digits."""
    return None if name == "digits" else name


def load_dataset(name: str, *, image_size: int = 8, channels: int = 1) -> ImageDataset:
    """Load the built-in ``digits`` dataset (1x8x8 only) or an image folder given by its path."""
    if name == "digits":
        if image_size != 8:
            raise UsageError(f"the bundled digits are 1x8x8; got image_size {image_size!r} (use an image folder)")
        if channels != 1:
            raise UsageError(f"the bundled digits are 1x8x8; got channels {channels!r} (use an image folder)")
        return load_digits_dataset()
    return load_image_folder(name, image_size, channels)
