"""Bad inputs (models, image folders, id files, recipes) end in one-line UsageErrors that name the culprit."""

import json
import os
import resource
import shutil
import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from audit.config import load_config
from diffusion.concepts import read_prompts
from diffusion.data import ImageDataset, load_dataset, load_image_folder
from diffusion.errors import UsageError
from diffusion.judge import train_judge
from diffusion.loading import load_model
from diffusion.model import DiffusionModel, build_unet
from diffusion.splits import make_splits, read_sample_ids
from diffusion.training import TrainConfig
from erasediff.cli import main

from .conftest import tiny_model


def usage_error(match: str, function, *args, **kwargs) -> str:
    """Call ``function``, expect a one-line UsageError matching ``match``, return its message."""
    with pytest.raises(UsageError, match=match) as caught:
        function(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


# ---------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny model saved once; each test corrupts its own copy."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_model().save(folder, {"role": "test"})
    return folder


@pytest.fixture
def copy_of(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_missing_folder_is_not_taken_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("diffusion.model.UNet2DModel.from_pretrained", pytest.fail)
    message = usage_error("not found", DiffusionModel.load, "runs/reference")
    assert message == (
        "model 'runs/reference' not found: no such folder (for a Hugging Face hub model write hf://runs/reference)"
    )
    assert "hf://" not in usage_error("not found: no such folder", DiffusionModel.load, tmp_path / "a" / "b" / "c")


def test_hf_prefix_loads_from_the_hub(monkeypatch):
    calls = []

    def offline(location, **kwargs):
        calls.append((location, kwargs))
        raise OSError("offline")

    monkeypatch.setattr("diffusion.model.UNet2DModel.from_pretrained", offline)
    usage_error("could not load model 'hf://owner/name': offline", DiffusionModel.load, "hf://owner/name")
    (location, kwargs), = calls
    assert location == "owner/name" and kwargs["use_safetensors"] and not kwargs["local_files_only"]
    usage_error("is not a hub model id", DiffusionModel.load, "hf://owner/name/extra")


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    usage_error("is not a folder", DiffusionModel.load, tmp_path / "file")
    if Path("/dev/zero").exists():
        usage_error("model '/dev/zero' is not a folder", DiffusionModel.load, "/dev/zero")


def test_load_keeps_the_global_random_state(saved):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_model(saved, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edit_weights(folder: Path, edit) -> None:
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights)


def _nan_weight(tensors):
    tensors["conv_in.weight"][0, 0, 0, 0] = float("nan")


def _inf_weight(tensors):
    tensors["conv_out.bias"][0] = float("inf")


def _wrong_shape(tensors):
    tensors["conv_norm_out.bias"] = torch.zeros(3)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", prediction_type="v_prediction"),
         "predicts 'v_prediction'; only 'epsilon'"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", beta_end=2.0), "invalid noise schedule"),
        (lambda m: _edit_weights(m, _nan_weight), "has non-finite weights in conv_in.weight"),
        (lambda m: _edit_weights(m, _inf_weight), "has non-finite weights in conv_out.bias"),
        (lambda m: _edit_weights(m, lambda t: t.pop("conv_norm_out.bias")),
         "unet weights do not match its config: missing conv_norm_out.bias$"),
        (lambda m: _edit_weights(m, _wrong_shape),
         r"unet weights do not match its config: conv_norm_out.bias has shape \(3,\), expected \(8,\)"),
        (lambda m: _edit_weights(m, lambda t: t.update(extra=torch.zeros(1))), "unexpected extra"),
        (lambda m: (m / "erasediff.json").write_text("{not json"), r"erasediff.json' is not a readable JSON file"),
        (lambda m: (m / "erasediff.json").write_bytes(b"\xff\xfe"), r"erasediff.json' is not UTF-8 text"),
        (lambda m: (m / "erasediff.json").write_text("[1, 2]"), "erasediff.json' must hold a JSON object; got a list"),
        (lambda m: (m / "unet" / "config.json").write_text("[1]"), "config.json' must hold a JSON object"),
    ],
)
def test_broken_models_are_refused(copy_of, corrupt, message):
    corrupt(copy_of)
    usage_error(message, DiffusionModel.load, copy_of, device="cpu")


def test_read_metadata_names_a_corrupt_file(copy_of):
    (copy_of / "erasediff.json").write_text('{"a": ')
    assert str(copy_of / "erasediff.json") in usage_error("not a readable JSON file", DiffusionModel.read_metadata,
                                                          copy_of)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(block_out_channels=(0, 0)), r"block_out_channels must be positive ints; got \(0, 0\)"),
        (dict(block_out_channels=()), r"block_out_channels must be positive ints; got \(\)"),
        (dict(block_out_channels=(-8, 16)), "block_out_channels must be positive ints"),
        (dict(block_out_channels=(12, 20)), "multiples of 8"),
        (dict(sample_size=5), "image size 5 does not fit a UNet with 2 blocks; expected a multiple of 2"),
        (dict(sample_size=4, block_out_channels=(8, 8, 8, 8)), "image size 4 does not fit a UNet with 4 blocks"),
    ],
)
def test_unet_shape_is_checked(kwargs, message):
    usage_error(message, build_unet, **kwargs)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "steps must be an int >= 1; got 0"),
        ("batch_size", 0, "batch_size must be an int >= 1; got 0"),
        ("lr", 0.0, "lr must be a finite number > 0; got 0.0"),
        ("lr", float("nan"), "lr must be a finite number > 0; got nan"),
        ("lr", float("inf"), "lr must be a finite number > 0; got inf"),
        ("ema_decay", 1.0, r"ema_decay must be in \[0, 1\); got 1.0"),
        ("ema_decay", -0.1, r"ema_decay must be in \[0, 1\)"),
        ("weight_decay", -1.0, "weight_decay must be a finite number >= 0"),
        ("block_out_channels", (0, 0), r"block_out_channels must be positive ints; got \(0, 0\)"),
        ("layers_per_block", 0, "layers_per_block must be an int >= 1"),
        ("num_train_timesteps", 0, "num_train_timesteps must be an int >= 1"),
    ],
)
def test_train_config_is_checked(field, value, message):
    usage_error(message, TrainConfig, **{field: value})


# ---------------------------------------------------------------------------------------------- images


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1], dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's signature)."""
    png = _png((8, 8))
    header = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + header + struct.pack(">I", zlib.crc32(b"IHDR" + header)) + png[33:]


def _image_folder(root: Path, per_class: dict[str, int]) -> Path:
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(_png((12, 12)))
    return root


@pytest.mark.parametrize(
    "content, reason",
    [
        (_png()[:300], "truncated"),
        (b"just some text", "not an image"),
        (_png_claiming(100_000, 100_000), "decompression bomb"),
        (_png_claiming(10_000, 9_500), "decompression bomb"),
        (_png_claiming(8_200, 8_200), "8200x8200 pixels; at most 67,108,864"),
    ],
)
def test_unreadable_images_are_named(tmp_path, content, reason):
    _image_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "bad.png").write_bytes(content)
    message = usage_error(reason, load_image_folder, tmp_path, size=8)
    assert str(tmp_path / "b" / "bad.png") in message


def test_image_folder_root_and_size_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    usage_error("is not a folder", load_image_folder, tmp_path / "file", size=8)
    usage_error("image_size must be a whole number of pixels from 1 to 2048; got 0", load_image_folder, tmp_path,
                size=0)
    usage_error("from 1 to 2048; got 100000", load_image_folder, tmp_path, size=100_000)


def test_digits_only_come_as_1x8x8():
    usage_error("the bundled digits are 1x8x8; got image_size 16", load_dataset, "digits", image_size=16)
    usage_error("the bundled digits are 1x8x8; got channels 3", load_dataset, "digits", channels=3)


def test_train_refuses_an_image_size_the_unet_cannot_take(tmp_path):
    data = _image_folder(tmp_path / "data", {"a": 6, "b": 6})
    for args, message in [
        (["--data", data, "--image-size", 5], "image size 5 does not fit"),
        (["--image-size", 16], "the bundled digits are 1x8x8"),
    ]:
        result = CliRunner().invoke(main, [str(a) for a in ["train", "--out", tmp_path / "ref", "--quiet", *args]])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "ref").exists()


def test_judge_needs_images_of_every_class():
    labels = torch.tensor([0] * 6 + [1] * 2)
    dataset = ImageDataset(torch.zeros(8, 1, 8, 8), labels, ("x", "y"), "tiny")
    usage_error("the judge needs at least 5 images per class; class 'y' has 2", train_judge, dataset)


# ---------------------------------------------------------------------------------------------- splits and ids


@pytest.mark.parametrize(
    "content, message",
    [
        (b"1 2 \xff\xfe\x00", r"is not UTF-8 text \(byte 0xff at offset 4\)"),
        (b"1, " + b"7" * 5000, "holds a 5000-digit sample id '77777777777777777777...'"),
        (b"1, -3", "holds a negative sample id '-3'"),
        (b"1, 1_000", "holds a non-integer value '1_000'"),
        (b"4.5", "holds a non-integer value '4.5'"),
    ],
)
def test_bad_id_files_are_named(tmp_path, content, message):
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    assert str(path) in usage_error(message, read_sample_ids, str(path))


def test_id_files_are_small_regular_files(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"1\n" * (5 * 2**20 + 1))
    usage_error("is larger than 10,485,760 bytes", read_sample_ids, str(big))
    usage_error("is not a regular file", read_sample_ids, str(tmp_path))
    (tmp_path / "bom.txt").write_bytes("\ufeff+4, 5\n".encode())
    assert read_sample_ids(str(tmp_path / "bom.txt")) == (4, 5)


@pytest.mark.parametrize(
    "seed, fraction, message",
    [
        (-1, 0.5, r"the split seed must be an int in \[0, 2\*\*32 - 1\]; got -1"),
        (2**32, 0.5, "got 4294967296"),
        (10**5000, 0.5, "got an int of 16610 bits"),
        (0, float("nan"), r"member_fraction must be in \(0, 1\); got nan"),
        (0, 0.001, "cannot split 1797 images of 10 classes with member_fraction 0.001"),
    ],
    ids=["negative", "2**32", "5000 digits", "nan", "too few"],
)
def test_split_inputs_are_checked(digits, seed, fraction, message):
    usage_error(message, make_splits, digits.labels, seed, fraction)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_every_file_the_project_reads_is_bounded_and_regular(tmp_path, kind):
    """Prompts, ids, configs, records and results all go through one reader: a FIFO (which would block), /dev/zero
    (which never ends), a folder or an oversized file is one line naming the file, at once."""
    path = tmp_path / "prompts.txt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"three\n" * 2_100_000)  # 12.6 MB: beyond every bound (prompts 1 MB, ids 10 MB)
    expected = "is larger than" if kind == "huge" else "is not a regular file"
    for read in (read_prompts, read_sample_ids, lambda p: load_config(p)):
        with pytest.raises(UsageError, match=expected):
            read(str(path))


@pytest.mark.parametrize("part, edit, message", [
    ("unet", {"block_out_channels": [4096, 8192, 8192, 8192], "layers_per_block": 64}, "ask for about"),
    ("unet", {"num_class_embeds": 10**9}, "ask for about"),
    ("unet", {"sample_size": 10**6}, "sample_size 1000000 is beyond 4096"),
    ("unet", {"layers_per_block": -1}, "layers_per_block must be positive integers"),
    ("scheduler", {"num_train_timesteps": 10**8}, "num_train_timesteps 100000000 is beyond 100000"),
])
def test_absurd_model_configs_are_refused_before_any_allocation(tmp_path, part, edit, message):
    """A config asking for millions of channels, classes or timesteps: one line from the config alone, in
    milliseconds, with no tensor allocated (peak memory stays where it was)."""
    folder = tmp_path / "model"
    tiny_model().save(folder)
    config = folder / part / ("config.json" if part == "unet" else "scheduler_config.json")
    config.write_text(json.dumps({**json.loads(config.read_text()), **edit}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_error(message, DiffusionModel.load, folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: under 100 MB more
