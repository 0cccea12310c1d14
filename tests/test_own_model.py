"""Auditing a model this project did not train: declared data roles, deletion by file, fine-tuned models and
their re-fine-tuned references, and the refusals that keep a split from being invented."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline
from PIL import Image
from scipy.ndimage import grey_dilation

from diffusion.data import load_image_folder
from diffusion.model import DiffusionModel
from diffusion.splits import make_splits
from erasediff.cli import main

from .conftest import CONTROL_CLASS, CONTROL_MEMBER_FRACTION

FINE_TUNE = ["--steps", "60", "--batch-size", "64", "--lr", "1e-3", "--ema-decay", "0.99",
             "--member-fraction", str(CONTROL_MEMBER_FRACTION)]
SMALL_AUDIT = ("extraction_samples_per_class: 30\neval_samples_per_class: 40\nforgotten_samples_per_class: 40\n"
               "eval_steps: 20\n")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, message: str) -> None:
    """Exit 2 and one line on stderr that holds ``message``."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


@pytest.fixture(scope="module")
def bold_digits(control_workspace, tmp_path_factory) -> Path:
    """The control's digits drawn in another style (strokes dilated), each captioned ("a bold digit 1"): the
    fine-tuning data."""
    source = control_workspace["root"] / "digits3"
    root = tmp_path_factory.mktemp("bold") / "bold"
    for path in sorted(source.rglob("*.png")):
        pixels = np.asarray(Image.open(path))
        target = root / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey_dilation(pixels, size=(2, 2))).save(target)
    captions = [json.dumps({"file_name": path.relative_to(root).as_posix(),
                            "text": f"a bold digit {path.parent.name.removeprefix('digit')}"})
                for path in sorted(root.rglob("*.png"))]
    (root / "metadata.jsonl").write_text("\n".join(captions) + "\n")
    return root


@pytest.fixture(scope="module")
def plain_original(control_workspace, tmp_path_factory) -> Path:
    """The control's original saved by plain diffusers ``save_pretrained``: no erasediff.json."""
    model = DiffusionModel.load(control_workspace["original"], device="cpu")
    path = tmp_path_factory.mktemp("plain") / "model"
    DDPMPipeline(unet=model.unet, scheduler=model.scheduler).save_pretrained(path, safe_serialization=True)
    return path


def role_lists(folder: Path, out: Path) -> tuple[Path, Path]:
    """The control split's members and heldout images of ``folder`` as two file lists."""
    data = load_image_folder(folder, size=8)
    splits = make_splits(data.labels, seed=0, member_fraction=CONTROL_MEMBER_FRACTION)
    members, heldout = out / "members.txt", out / "heldout.txt"
    members.write_text("\n".join(data.files[i] for i in splits.members))
    heldout.write_text("\n".join(data.files[i] for i in splits.heldout))
    return members, heldout


def test_a_model_without_a_record_is_refused_in_seconds_unless_its_members_are_declared(control_workspace,
                                                                                         plain_original, tmp_path):
    data = control_workspace["root"] / "digits3"
    start = time.perf_counter()
    result = run("audit", "--model", plain_original, "--data", data, "--forget-class", "1", "--out",
                 tmp_path / "out", "--quiet")
    refused(result, f"model '{plain_original}' records no member split")
    assert time.perf_counter() - start < 10 and not (tmp_path / "out").exists()
    # the hub layout too, before any download is tried
    refused(run("audit", "--model", "hf://CompVis/stable-diffusion-v1-4", "--data", data, "--forget-concept",
                "digit one", "--out", tmp_path / "out", "--quiet"), "records no member split")


@pytest.mark.slow
def test_without_a_known_recipe_the_audit_compares_with_chance_and_says_so(control_workspace, plain_original,
                                                                            tmp_path):
    """Declared roles but no recipe and no reference: no reference is trained some other way; membership is
    compared with chance, the verdict says first what that does not prove, the reference-bound checks are not made,
    and the original presented as unlearned (a no-op) still FAILs."""
    data = control_workspace["root"] / "digits3"
    members, heldout = role_lists(data, tmp_path)
    out = tmp_path / "noref"
    result = run("audit", "--config", control_workspace["config"], "--model", plain_original, "--members", members,
                 "--heldout", heldout, "--unlearned", control_workspace["original"], "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    assert "without retrained references" in result.output.splitlines()[0]
    results = json.loads((out / "results.json").read_text())
    why = results["power"]["without_references"]
    assert why.startswith(f"model '{plain_original}' records no training recipe")
    assert results["power"]["statement"].startswith("FAIL WITHOUT RETRAINED REFERENCES")
    assert results["membership"]["references"] == [] and set(results["models"]) == {"original", "unlearned"}
    label = results["membership"]["combined"]["label"]
    assert label["decision"] == "FAIL" and label["unlearned"]["reference_values"] == [0.5]
    names = {c["name"] for c in results["checks"]}
    assert "forgotten_generation" not in names and "membership[label]" in names
    assert "without retrained references" in (out / "report.html").read_text()


def test_declared_roles_are_checked(control_workspace, tmp_path):
    data = control_workspace["root"] / "digits3"
    members, heldout = role_lists(data, tmp_path)
    base = ["audit", "--model", control_workspace["original"], "--data", data, "--member-fraction",
            str(CONTROL_MEMBER_FRACTION), "--out", tmp_path / "out", "--quiet"]
    refused(run(*base, "--members", members, "--forget-class", "1"), "'members' is declared without 'heldout'")
    first_heldout = heldout.read_text().splitlines()[0]
    overlap = tmp_path / "overlap.txt"
    overlap.write_text(members.read_text() + "\n" + first_heldout)
    refused(run(*base, "--members", overlap, "--heldout", heldout, "--forget-class", "1"),
            f"'{first_heldout}' is declared both a member and a heldout image")
    twice = tmp_path / "twice.txt"
    twice.write_text(members.read_text() + "\n" + members.read_text().splitlines()[0])
    refused(run(*base, "--members", twice, "--heldout", heldout, "--forget-class", "1"), "is given twice")
    forget = tmp_path / "forget.txt"
    forget.write_text(first_heldout)
    refused(run(*base, "--forget-files", forget), f"forget file '{first_heldout}' is not among the members")
    forget.write_text("digit1/no-such-image.png")
    refused(run(*base, "--forget-files", forget), "'digit1/no-such-image.png' is not an image of the data folder")
    refused(run("audit", "--forget-files", forget, "--out", tmp_path / "out", "--quiet"),
            "names images by file, but the data is the bundled digits")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_declaring_the_members_a_model_was_trained_on_gives_the_audit_of_its_recorded_split(
        control_workspace, plain_original, retrained_audit, tmp_path):
    """The plain diffusers copy of the control original, its members and heldout declared by file: the same
    checks, estimates and verdict as the audit that reads the split from the original's record."""
    data = control_workspace["root"] / "digits3"
    members, heldout = role_lists(data, tmp_path)
    out = tmp_path / "declared"
    result = run("audit", "--config", control_workspace["config"], "--model", plain_original, "--members", members,
                 "--heldout", heldout, "--unlearned", control_workspace["retrained_a"], "--retrained",
                 control_workspace["retrained_b"], "--retrained", control_workspace["retrained_c"], "--out", out,
                 "--quiet")
    assert result.exit_code in (0, 4), result.output
    declared = json.loads((out / "results.json").read_text())
    recorded = json.loads((retrained_audit[0] / "results.json").read_text())
    assert declared["config"]["members"] == str(members)
    assert declared["checks"] == recorded["checks"] and declared["verdict"] == recorded["verdict"]
    for table in (retrained_audit[0] / "scores").glob("*.csv"):
        assert (out / "scores" / table.name).read_text() == table.read_text(), table.name


def test_train_base_fine_tunes_and_records_its_base_and_lora_rank(control_workspace, bold_digits, tmp_path):
    base = control_workspace["original"]
    refused(run("train", "--data", bold_digits, "--lora-rank", "2", "--out", tmp_path / "x", "--quiet"),
            "a LoRA adapts a base model; give --base")
    result = run("train", "--base", base, "--data", bold_digits, *FINE_TUNE, "--lora-rank", "2", "--steps", "20",
                 "--out", tmp_path / "lora", "--quiet")
    assert result.exit_code == 0, result.output
    record = DiffusionModel.read_metadata(tmp_path / "lora")
    base_model = DiffusionModel.load(base)
    assert record["role"] == "fine-tuned" and record["train_config"]["lora_rank"] == 2
    assert record["base"] == {"source": str(base), "fingerprint": base_model.fingerprint()}
    tuned = DiffusionModel.load(tmp_path / "lora")  # merged: the base's own layout, other weights
    assert tuned.unet.state_dict().keys() == base_model.unet.state_dict().keys()
    assert tuned.fingerprint() != base_model.fingerprint()


@pytest.mark.slow
def test_a_fine_tuned_model_is_audited_against_its_base_fine_tuned_again(control_workspace, bold_digits, tmp_path):
    """A base fine-tuned on a second folder, ten of its fine-tuning images deleted by file: the references are the
    base fine-tuned again without them (recorded as such), and the fine-tuned model itself as "unlearned" (a
    no-op) never PASSes. A base changed since the fine-tune is refused."""
    base = tmp_path / "base"
    DiffusionModel.load(control_workspace["original"]).save(base, DiffusionModel.read_metadata(
        control_workspace["original"]))
    tuned = tmp_path / "tuned"
    assert run("train", "--base", base, "--data", bold_digits, *FINE_TUNE, "--out", tuned, "--quiet").exit_code == 0
    data = load_image_folder(bold_digits, size=8)
    splits = make_splits(data.labels, seed=0, member_fraction=CONTROL_MEMBER_FRACTION)
    forget = tmp_path / "forget.txt"
    chosen = [data.files[i] for i in splits.members[data.labels[splits.members].numpy() == CONTROL_CLASS][:10]]
    forget.write_text("\n".join(chosen))
    config = tmp_path / "audit.yaml"
    config.write_text(f"data: {bold_digits}\nmember_fraction: {CONTROL_MEMBER_FRACTION}\n{SMALL_AUDIT}")
    out = tmp_path / "audit"
    result = run("audit", "--config", config, "--model", tuned, "--unlearned", tuned, "--forget-files", forget,
                 "--out", out, "--quiet")
    assert result.exit_code in (1, 4), result.output  # a no-op: FAIL or INCONCLUSIVE, never PASS
    results = json.loads((out / "results.json").read_text())
    assert results["forget_spec"]["sample_ids"] == sorted(data.ids_of_files(chosen, "x").tolist())
    for role in ("reference_1", "reference_2"):
        source = results["models"][role]
        assert source["how"].startswith("the base fine-tuned again without the forget set"), source
        record = DiffusionModel.read_metadata(source["source"])
        assert record["params"]["base"] == str(base) and record["params"]["steps"] == 60
    # the base changed since the fine-tune: its references would not be the model that never saw the forget set
    changed = DiffusionModel.load(base)
    next(changed.unet.parameters()).data.add_(0.01)
    changed.save(base, {})
    refused(run("audit", "--config", config, "--model", tuned, "--unlearned", tuned, "--forget-files", forget,
                "--seed", "1", "--out", tmp_path / "again", "--quiet"), f"base model '{base}' has other weights")


def test_a_text_model_is_fine_tuned_with_a_lora_on_captioned_images(control_workspace, bold_digits, tmp_path):
    """A tiny text model of the plain digits, fine-tuned with a LoRA on the captioned bold ones: a text model
    again, in its base's layout, recording its base."""
    from diffusion.loading import load_model
    from diffusion.text_model import TextDiffusionModel

    base = tmp_path / "text"
    result = run("train", "--kind", "text", "--data", control_workspace["root"] / "digits3", "--steps", "10",
                 "--block-out-channels", "8,16", "--batch-size", "32", "--out", base, "--quiet")
    assert result.exit_code == 0, result.output
    tuned = tmp_path / "tuned"
    result = run("train", "--base", base, "--data", bold_digits, "--steps", "10", "--batch-size", "32",
                 "--lora-rank", "2", "--out", tuned, "--quiet")
    assert result.exit_code == 0, result.output
    model, base_model = load_model(tuned), load_model(base)
    assert isinstance(model, TextDiffusionModel) and model.fingerprint() != base_model.fingerprint()
    record = DiffusionModel.read_metadata(tuned)
    assert record["base"]["fingerprint"] == base_model.fingerprint() and record["train_config"]["kind"] == "text"


def test_a_recipe_file_says_how_the_references_of_a_model_trained_elsewhere_are_trained(control_workspace,
                                                                                          plain_original, tmp_path):
    data = control_workspace["root"] / "digits3"
    members, heldout = role_lists(data, tmp_path)
    task = ["references", "--model", plain_original, "--data", data, "--members", members, "--heldout", heldout,
            "--forget-class", "1", "--index", "1", "--of", "1", "--quiet"]
    refused(run(*task), f"no reference to train: model '{plain_original}' records no training recipe")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: 5\nlr: 2.0e-3\nlora_rank: 4\n")
    refused(run(*task, "--recipe", recipe), "a LoRA (lora_rank 4) adapts a base model; give its 'base'")
    recipe.write_text("steps: 5\nlearning_rate: 0.1\n")
    refused(run(*task, "--recipe", recipe), "unknown key 'learning_rate'")
    refused(run("audit", "--recipe", recipe, "--out", tmp_path / "out", "--quiet"),
            "'recipe' says how a given original model was trained")
    recipe.write_text("steps: 5\nlr: 2.0e-3\nbatch_size: 16\n")
    result = run(*task, "--recipe", recipe)
    assert result.exit_code == 0, result.output
    record = DiffusionModel.read_metadata(result.output.strip().rsplit(": ", 1)[1])
    assert record["params"] == {"steps": 5, "batch_size": 16, "lr": 2e-3} and record["steps"] == 5
    assert record["forget_spec"]["classes"] == [1] and record["splits"]["declared"]


def test_a_latent_text_model_is_fine_tuned_on_its_vae_latents(control_workspace, tmp_path):
    """The Stable Diffusion layout with a VAE (random tiny weights): the fine-tune trains on the images encoded by
    the base's own VAE, at the base's resolution (the folder's 8x8 grey digits read as 16x16 RGB)."""
    from diffusion.loading import load_model

    from .test_text_model import tiny_text_model

    tiny_text_model(vae=True).save(tmp_path / "sd")
    result = run("train", "--base", tmp_path / "sd", "--data", control_workspace["root"] / "digits3", "--steps", "2",
                 "--batch-size", "8", "--lora-rank", "2", "--out", tmp_path / "tuned", "--quiet")
    assert result.exit_code == 0, result.output
    tuned, base = load_model(tmp_path / "tuned"), load_model(tmp_path / "sd")
    assert tuned.vae is not None and tuned.pixel_shape == (3, 16, 16)
    assert tuned.fingerprint() != base.fingerprint()
    assert torch.equal(next(tuned.vae.parameters()), next(base.vae.parameters()))  # the VAE is not trained
