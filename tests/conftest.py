"""Shared fixtures: the bundled digits, deterministic splits and tiny real diffusers models (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from audit.config import AuditConfig, load_config
from diffusion.data import load_digits_dataset, load_image_folder
from diffusion.judge import train_judge
from diffusion.model import DiffusionModel
from diffusion.presets import DEFAULT_MEMBER_FRACTION
from diffusion.reference import train_on_ids
from diffusion.splits import ForgetSpec, make_splits
from diffusion.training import TrainConfig
from erasediff.cli import main

# One thread: the tiny models gain nothing from two, and a busy 2-core machine slows two threads 5-10x.
torch.set_num_threads(1)

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, num_train_timesteps=100)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep every test's cache (judge, reference models) out of the user's home, session fixtures' too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ERASEDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="session")
def splits(digits):
    return make_splits(digits.labels, seed=0)


def drawn_split_record(labels=None, member_fraction: float = DEFAULT_MEMBER_FRACTION) -> dict:
    """What a model the project trained on the split drawn with seed 0 records (of ``labels``, default the bundled
    digits'): a test's saved model carries it as ``erasediff train``'s do, for a model that records no split is only
    used with declared members."""
    labels = load_digits_dataset().labels if labels is None else labels
    return {"role": "test", "splits": make_splits(labels, 0, member_fraction).to_dict()}


def tiny_model(seed: int = 0, num_classes: int | None = 10) -> DiffusionModel:
    """A ~20 k parameter class-conditional UNet2DModel on 8x8 with a 100-step DDPM schedule, on the CPU."""
    return DiffusionModel.create(num_classes=num_classes, seed=seed, device="cpu", **TINY)


@pytest.fixture
def model() -> DiffusionModel:
    return tiny_model()


@pytest.fixture(scope="session")
def judge(digits):
    """The real judge recipe (about 10 s): later tests score generated images with it."""
    return train_judge(digits)


def write_digit_folder(root: Path, digits, classes=(0, 1, 2)) -> Path:
    """The bundled digits of ``classes`` written as an image folder ``root/digit<c>/<id>.png`` (8x8 grey PNGs)."""
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True)
        for i in np.flatnonzero(digits.labels.numpy() == c):
            pixels = ((digits.images[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / f"digit{c}" / f"{i}.png")
    return root


CONTROL_CLASS = 1
# Half the images as members (not the default quarter): 3 classes of ~180 digits leave enough retained members
# for the calibration set and enough forget images for the comparison.
CONTROL_MEMBER_FRACTION = 0.5
CONTROL_LABEL = "<script>alert(1)</script> request"
CONTROL_RECIPE = TrainConfig(steps=500, batch_size=64, lr=2e-3, ema_decay=0.99, block_out_channels=(16, 32),
                             num_train_timesteps=100)


@pytest.fixture(scope="session")
def control_workspace(tmp_path_factory, digits) -> dict[str, Path]:
    """Digits of classes 0-2 as an image folder, a small model trained on its members, and three trained
    without class 1 (own seeds): the known-answer controls of the audit, shared by every test that needs one."""
    root = tmp_path_factory.mktemp("controls")
    folder = write_digit_folder(root / "digits3", digits)
    data = load_image_folder(folder, size=8)
    splits = make_splits(data.labels, seed=0, member_fraction=CONTROL_MEMBER_FRACTION)
    retain = ForgetSpec(classes=(CONTROL_CLASS,)).retain_ids(data.labels, splits)
    paths = {}
    spec = ForgetSpec(classes=(CONTROL_CLASS,))
    for name, ids, seed in [("original", splits.members, 0), ("retrained_a", retain, 1), ("retrained_b", retain, 2),
                            ("retrained_c", retain, 3)]:
        recipe = TrainConfig(**{**CONTROL_RECIPE.to_dict(), "seed": seed})
        retrained = name != "original"  # recorded as the audit's own references are: checked when given
        trained = train_on_ids(data, ids, recipe, role="retrained" if retrained else name, quiet=True,
                               extra={"splits": splits.to_dict(),
                                      **({"forget_spec": spec.to_dict()} if retrained else {})})
        trained.model.save(root / name, trained.record)
        paths[name] = root / name
    config, stress_config = root / "audit.yaml", root / "audit_stress.yaml"
    config.write_text(f"data: {folder}\nforget_classes: [{CONTROL_CLASS}]\nextraction_samples_per_class: 30\n"
                      f"member_fraction: {CONTROL_MEMBER_FRACTION}\n"
                      "eval_samples_per_class: 40\nforgotten_samples_per_class: 40\neval_steps: 20\n")
    # membership after fine-tuning, off by default, on for the tests of the stress probes (tests/test_stress_probes)
    stress_config.write_text(config.read_text() + "finetuned_membership: true\n")
    return {"root": root, "config": config, "stress_config": stress_config, **paths}


def control_audit(workspace: dict[str, Path], unlearned: Path, out: Path, *extra):
    """``erasediff audit`` of ``unlearned`` against references retrained_b and retrained_c, through the CLI."""
    args = ["audit", "--config", workspace["config"], "--model", workspace["original"], "--unlearned", unlearned,
            "--retrained", workspace["retrained_b"], "--retrained", workspace["retrained_c"], "--out", out, "--quiet",
            *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


def control_config(workspace: dict[str, Path], unlearned: Path, out: Path, config: str = "config") -> AuditConfig:
    """The configuration :func:`control_audit` gives the command line (``config``: the workspace's ``config``, or
    ``stress_config`` with every stress probe on), for :func:`audit.run.run_audit` in this process (where a memo of
    the fixed models' results can be shared between audits)."""
    return load_config(workspace[config], {"model": str(workspace["original"]), "unlearned": str(unlearned),
                                           "retrained": [str(workspace["retrained_b"]), str(workspace["retrained_c"])],
                                           "out": str(out), "quiet": True})


@pytest.fixture(scope="session")
def noop_audit(control_workspace):
    """The original model presented as "unlearned": the audit's output folder and the CLI result."""
    out = control_workspace["root"] / "noop"
    return out, control_audit(control_workspace, control_workspace["original"], out, "--forget-label", CONTROL_LABEL)


@pytest.fixture(scope="session")
def retrained_audit(control_workspace):
    """A model retrained from scratch without the forget set presented as "unlearned"."""
    out = control_workspace["root"] / "retrained"
    return out, control_audit(control_workspace, control_workspace["retrained_a"], out)
