"""Text-to-image models: a tiny Stable-Diffusion-layout pipeline built from configs (random weights), with and
without a VAE, through saving, loading, sampling, concept tasks and the unlearning methods that serve them."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from diffusers import AutoencoderKL, DDPMScheduler

from attacks.adversarial_prompt import adversarial_prompt_attack, search_prompt
from attacks.concept_inversion import concept_inversion, fit_concept_token
from attacks.prompt_regeneration import prompt_regeneration
from diffusion.captions import (
    DIGIT_CAPTIONS,
    NAMED_HELDOUT_TEMPLATES,
    NAMED_TRAIN_TEMPLATES,
    CaptionSampler,
    build_tokenizer,
)
from diffusion.concepts import concept_spec, unused_wordings
from diffusion.data import ImageDataset, load_dataset, load_image_folder
from diffusion.errors import UsageError
from diffusion.loading import load_model
from diffusion.seeding import seeded_normal
from diffusion.splits import ForgetSpec, ForgetTask, make_splits
from diffusion.text_model import TextDiffusionModel, build_text_components, captioned, text_task
from erasediff.cli import main
from unlearn import METHODS

from .conftest import drawn_split_record, tiny_model, write_digit_folder

ALL_CAPTIONS = DIGIT_CAPTIONS.every_caption()
# A few steps of each method that serves text models (selective_amnesia replays class labels: class models only).
TEXT_FAST = {
    "erasediff": dict(steps=3, lr=1e-3, batch_size=16),
    "esd_x": dict(steps=3, lr=1e-3, batch_size=4, ddim_steps=4),
    "esd_u": dict(steps=3, lr=1e-3, batch_size=4, ddim_steps=4),
    "finetune": dict(steps=3, batch_size=16),
    "gradient_ascent": dict(steps=3, lr=1e-3, batch_size=16),
    "random_label": dict(steps=3, lr=1e-3, batch_size=16),
    "salun": dict(steps=3, lr=1e-3, batch_size=16),
    "retrain": dict(steps=3),
    "refinetune": dict(steps=3, batch_size=16, lr=1e-3, lora_rank=2),  # its base: the model, saved by the test
}
TRAINS_THE_TEXT_ENCODER = {"retrain", "refinetune"}


def tiny_text_model(seed: int = 0, vae: bool = False, widths: tuple[int, ...] = (8, 16),
                    timesteps: int = 100) -> TextDiffusionModel:
    """A tiny text model of 1x8x8 digits, or with ``vae`` one of 3x16x16 images diffusing 4x8x8 latents."""
    tokenizer = build_tokenizer(ALL_CAPTIONS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, text_encoder = build_text_components(tokenizer, 8, 4 if vae else 1, widths, text_width=16)
        autoencoder = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
            norm_num_groups=2, sample_size=16,
        ) if vae else None
    scheduler = DDPMScheduler(num_train_timesteps=timesteps, clip_sample=False, steps_offset=1)
    return TextDiffusionModel(unet, text_encoder, tokenizer, scheduler, autoencoder, device="cpu")


def rgb16(digits) -> ImageDataset:
    """The digits as 3x16x16 images (what the VAE model takes)."""
    images = F.interpolate(digits.images, size=16, mode="bilinear").repeat(1, 3, 1, 1)
    return ImageDataset(images, digits.labels, digits.class_names, "digits-rgb16")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_saved_in_stable_diffusion_layout_and_loaded_back(tmp_path):
    model = tiny_text_model()
    model.save(tmp_path / "m", {"role": "test"})
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["vae"] == [None, None]
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "m" / "text_encoder" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "m", device="cpu")
    assert isinstance(loaded, TextDiffusionModel) and loaded.conditioning == "text"
    assert loaded.fingerprint() == model.fingerprint()
    prompts = ["digit 3", "a handwritten digit seven"]
    assert torch.equal(loaded.sample(prompts, seed=1, steps=3), model.sample(prompts, seed=1, steps=3))
    assert not torch.equal(model.sample(["digit 3"], seed=1, steps=3), model.sample(["digit 7"], seed=1, steps=3))
    # sampling builds no autograd graph (with one, generating the audit's 500 images took 24 GB)
    grad_enabled, guided_noise = [], loaded.guided_noise
    loaded.guided_noise = lambda *args: grad_enabled.append(torch.is_grad_enabled()) or guided_noise(*args)
    loaded.sample(prompts, seed=1, steps=2)
    assert grad_enabled == [False, False]
    assert loaded.tokenize(["the number 3"]).tolist() == model.tokenize(["the number 3"]).tolist()


def test_guidance_is_the_conditional_prediction_at_scale_one():
    model = tiny_text_model()
    x = seeded_normal(0, range(2), (1, 8, 8), stream="test")
    t, tokens = torch.tensor(40), model.tokenize(["digit 3", "digit 4"])
    with torch.no_grad():
        conditional = model.predict_noise(x, t.expand(2), tokens)
        assert torch.allclose(model.guided_noise(x, t, tokens, 1.0), conditional, atol=1e-5)
        unconditional = model.predict_noise(x, t.expand(2), model.tokenize(["", ""]))
        assert torch.allclose(model.guided_noise(x, t, tokens, 0.0), unconditional, atol=1e-5)


def test_trainable_modules_select_cross_attention_or_the_rest():
    model = tiny_text_model()
    names = {id(p): n for n, p in model.unet.named_parameters()}
    model.train_only("cross_attention")
    chosen = [names[id(p)] for p in model.trainable_parameters()]
    assert chosen and all(".attn2." in n and n.startswith("unet.") for n in chosen)
    model.train_only("non_cross_attention")
    chosen = [names[id(p)] for p in model.trainable_parameters()]
    assert chosen and not any(".attn2." in n or n.startswith("text_encoder.") for n in chosen)
    with pytest.raises(UsageError, match="trainable modules must be one of full, cross_attention"):
        model.train_only("attn")


def test_caption_sampler_draws_training_wordings_and_drops_some(digits):
    model = tiny_text_model()
    sampler = CaptionSampler(model.tokenizer, DIGIT_CAPTIONS, dropout=0.25)
    labels = torch.full((400,), 3)
    tokens = sampler(labels, torch.Generator().manual_seed(0))
    allowed = {tuple(row) for row in model.tokenize([*DIGIT_CAPTIONS.captions(3), ""]).tolist()}
    drawn = [tuple(row) for row in tokens.tolist()]
    assert set(drawn) == allowed  # every training wording and the empty prompt, nothing else
    empty = tuple(model.tokenize([""])[0].tolist())
    assert 0.18 < sum(row == empty for row in drawn) / len(drawn) < 0.32


def test_concept_requests_are_checked():
    spec = concept_spec(["a handwritten digit three", "the number 3"], DIGIT_CAPTIONS, anchor="the number 5")
    assert spec.classes == (3,) and spec.concept == ("a handwritten digit three", "the number 3")
    assert spec.fingerprint() != concept_spec(["three"], DIGIT_CAPTIONS, anchor="the number 5").fingerprint()
    assert spec.fingerprint() != ForgetSpec(classes=(3,)).fingerprint()
    for prompts, anchor, message in [
        ([], "", "needs at least one non-empty prompt"),
        (["  "], "", "needs at least one non-empty prompt"),
        (["a cat"], "", "names no class"),
        (["three or four"], "", "names classes [3, 4]"),
        (["three", "the number 4"], "", "name different classes [3, 4]"),
        (["three"], "Three", "equals the concept"),
        (["three"], "the number 3", "names the concept's class 3"),
    ]:
        with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
            concept_spec(prompts, DIGIT_CAPTIONS, anchor)


@pytest.mark.parametrize("concept, anchor, message", [
    ("please erase every three", "", "is 17 tokens long but this model reads 14: 'ry three' would be cut off"),
    ("three ü", "", "has characters this model's tokenizer does not know (in 'ü')"),
    ("three", "digit <5>", "the anchor prompt 'digit <5>' has characters"),
])
def test_prompts_that_do_not_survive_tokenization_are_refused(digits, splits, concept, anchor, message):
    """The check reads the tokens the model will see, not the raw text: a prompt cut short or holding characters
    the tokenizer maps to end-of-text is refused, naming what would be lost."""
    with pytest.raises(UsageError, match=re.escape(message)):
        tiny_text_model().forget_task(digits, splits, concept_spec([concept], DIGIT_CAPTIONS, anchor))


def test_text_task_conditions_the_concept_on_its_prompts(digits, splits):
    model = tiny_text_model()
    task = model.forget_task(digits, splits, concept_spec(["three", "digit 3"], DIGIT_CAPTIONS, anchor="digit 5"))
    assert task.forget_classes == (3,) and bool((digits.labels[task.forget.ids] == 3).all())
    assert task.forget.labels.shape == (len(task.forget), model.tokenizer.model_max_length)
    assert {tuple(r) for r in task.forget.labels.tolist()} == {tuple(r) for r in model.tokenize(["three", "digit 3"])
                                                               .tolist()}
    train_wordings = {tuple(r) for c in range(10) for r in model.tokenize(DIGIT_CAPTIONS.captions(c)).tolist()}
    assert {tuple(r) for r in task.retain.labels.tolist()} <= train_wordings
    assert task.anchor.tolist() == model.tokenize(["digit 5"])[0].tolist()
    again = model.forget_task(digits, splits, concept_spec(["three", "digit 3"], DIGIT_CAPTIONS, anchor="digit 5"))
    assert torch.equal(again.retain.labels, task.retain.labels)  # one caption per image, from the seed
    with pytest.raises(UsageError, match="--forget-class is for class-conditional models"):
        model.forget_task(digits, splits, ForgetSpec(classes=(3,)))
    with pytest.raises(UsageError, match="--forget-concept erases a concept from a text-to-image model"):
        tiny_model().forget_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS))


@pytest.mark.parametrize("name", sorted(TEXT_FAST))
def test_text_unlearner_contract(name, digits, splits, tmp_path):
    model = tiny_text_model()
    task = text_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS), model)
    before = model.fingerprint()
    params = TEXT_FAST[name]
    if name == "refinetune":
        model.save(tmp_path / "base")
        params = {**params, "base": str(tmp_path / "base")}
    result = METHODS.make(name, **params).unlearn(model, task, seed=3, quiet=True)
    assert model.fingerprint() == before, "the input model was modified"
    assert isinstance(result.model, TextDiffusionModel) and result.model.fingerprint() != before
    again = METHODS.make(name, **params).unlearn(model, task, seed=3, quiet=True)
    assert again.model.fingerprint() == result.model.fingerprint(), "same seed, different result"
    if name not in TRAINS_THE_TEXT_ENCODER:  # an erasure trains the UNet only; the text encoder stays the original's
        encoder = result.model.unet.text_encoder.state_dict()
        assert all(torch.equal(v, model.unet.text_encoder.state_dict()[k]) for k, v in encoder.items())


def test_every_text_method_is_covered_and_the_rest_refuse_text(digits, splits):
    model = tiny_text_model()
    task = text_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS), model)
    for name in set(METHODS) - set(TEXT_FAST):
        with pytest.raises(UsageError, match="class-conditional models only"):
            METHODS.make(name).check(task, model)
    with pytest.raises(UsageError, match="esd_x erases a concept from a text-to-image model"):
        METHODS.make("esd_x").check(ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(3,))), tiny_model())


def changed(before: TextDiffusionModel, after: TextDiffusionModel) -> set[str]:
    old = before.unet.state_dict()
    return {name for name, value in after.unet.state_dict().items() if not torch.equal(value, old[name])}


def test_esd_x_and_esd_u_train_their_own_modules(digits, splits):
    model = tiny_text_model()
    task = text_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS), model)
    x = changed(model, METHODS.make("esd_x", **TEXT_FAST["esd_x"]).unlearn(model, task, quiet=True).model)
    u = changed(model, METHODS.make("esd_u", **TEXT_FAST["esd_u"]).unlearn(model, task, quiet=True).model)
    assert x and all(".attn2." in n for n in x)
    assert u and not any(".attn2." in n or n.startswith("text_encoder.") for n in u)


def test_erasediff_pulls_the_concept_onto_the_anchor(digits, splits):
    """The anchor target: eps(x_t, concept) moves toward eps(x_t, anchor) on the forget images."""
    model = tiny_text_model()
    task = text_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS, anchor="digit 5"), model)
    x0 = task.forget.images[:32]
    noise, t = seeded_normal(0, range(32), x0.shape[1:], stream="test"), torch.full((32,), 50)

    def gap(m):
        with torch.no_grad():
            x_t = m.add_noise(x0, noise, t)
            concept = m.predict_noise(x_t, t, task.forget.labels[:32])
            return F.mse_loss(concept, m.predict_noise(x_t, t, task.anchor.expand(32, -1))).item()

    result = METHODS.make("erasediff", steps=15, lr=3e-3, eta=1.0, batch_size=32).unlearn(model, task, quiet=True)
    assert gap(result.model) < 0.5 * gap(model)


def test_tiny_stable_diffusion_with_a_vae_saves_loads_samples_and_unlearns(tmp_path, digits, splits):
    model = tiny_text_model(vae=True)
    assert model.image_shape == (4, 8, 8) and model.pixel_shape == (3, 16, 16)
    model.save(tmp_path / "sd")
    loaded = load_model(tmp_path / "sd", device="cpu")
    assert isinstance(loaded, TextDiffusionModel) and loaded.vae is not None
    assert loaded.fingerprint() == model.fingerprint()
    images = loaded.sample(["digit 3", "digit 4"], seed=0, steps=2)
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    # the fingerprint covers what turns a prompt into an image: the VAE and the tokenizer too
    other_vae = loaded.copy()
    other_vae.vae = tiny_text_model(seed=1, vae=True).vae
    other_tokenizer = loaded.copy()
    other_tokenizer.tokenizer = build_tokenizer([*ALL_CAPTIONS, "zebra"])
    fingerprints = {m.fingerprint() for m in (loaded, other_vae, other_tokenizer)}
    assert len(fingerprints) == 3 and torch.equal(loaded.unet.unet.conv_in.weight, other_vae.unet.unet.conv_in.weight)
    task = text_task(rgb16(digits), splits, concept_spec(["three"], DIGIT_CAPTIONS), loaded)
    assert task.forget.images.shape[1:] == (4, 8, 8)  # the diffusion's data are the VAE's latents
    for name in ("erasediff", "esd_x"):
        result = METHODS.make(name, **TEXT_FAST[name]).unlearn(loaded, task, quiet=True)
        assert result.model.fingerprint() != loaded.fingerprint()
        result.model.save(tmp_path / name)
        assert load_model(tmp_path / name, device="cpu").fingerprint() == result.model.fingerprint()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-cli")
    tiny_text_model().save(root / "text", drawn_split_record())
    tiny_model().save(root / "class", drawn_split_record())
    return root


@pytest.mark.parametrize(("model", "args", "message"), [
    ("class", ["--forget-concept", "three"], "--forget-concept erases a concept from a text-to-image model"),
    ("text", ["--forget-class", "3"], "--forget-class is for class-conditional models"),
    ("text", ["--forget-concept", ""], "the concept needs at least one non-empty prompt"),
    ("text", ["--forget-concept", "three", "--anchor", "three"], "the anchor 'three' equals the concept"),
    ("text", ["--forget-concept", "three", "--forget-class", "3"], "not both"),
    ("class", ["--forget-class", "3", "--anchor", "five"], "--anchor is the prompt a concept is mapped to"),
    ("class", ["--forget-class", "3", "--method", "esd_x"], "esd_x erases a concept from a text-to-image model"),
])
def test_unlearn_refuses_requests_that_do_not_fit_the_model(saved_models, tmp_path, model, args, message):
    result = invoke("unlearn", "--model", saved_models / model, "--out", tmp_path / "out", "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and message in result.output
    assert not (tmp_path / "out").exists()


def test_unlearn_and_evaluate_a_concept_through_the_cli(saved_models, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("three\n\nthe number 3\n")
    out = tmp_path / "erased"
    result = invoke("unlearn", "--model", saved_models / "text", "--forget-prompts", prompts, "--anchor", "digit 5",
                    "--steps", 2, "--batch-size", 8, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "erasediff.json").read_text())
    assert record["forget_spec"]["concept"] == ["three", "the number 3"]
    assert record["forget_spec"]["anchor"] == "digit 5" and record["forget_spec"]["classes"] == [3]
    metrics_path = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", out, "--forget-concept", "three", "--per-class", 2, "--sample-steps", 2,
                    "--json", metrics_path, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics["per_class_accuracy"]) == {str(c) for c in range(10)}
    assert metrics["forgotten_accuracy"] is not None and metrics["retained_fd"] > 0
    result = invoke("evaluate", "--model", saved_models / "class", "--forget-concept", "three", "--quiet")
    assert result.exit_code == 2 and "this model is conditioned on class" in result.output


@pytest.fixture(scope="module")
def concept_images(digits, splits):
    """Held-out images of the digit three as a tiny text model takes them, and the member threes in pixels."""
    model = tiny_text_model()
    spec = concept_spec(["three"], DIGIT_CAPTIONS)
    fit = captioned(digits.select(spec.heldout_ids(digits.labels, splits)), model, digits, 0)
    return model, fit, digits.select(spec.forget_ids(digits.labels, splits))


def test_concept_inversion_fits_a_new_word_on_a_frozen_copy(concept_images, judge):
    model, fit, forget = concept_images
    before = model.fingerprint()
    fitted = fit_concept_token(model, fit, steps=30, lr=0.1, num_images=8)
    assert model.fingerprint() == before
    assert fitted.record["fit_loss_after"] < fitted.record["fit_loss_before"]
    assert fitted.prompt[1] == model.unet.text_encoder.get_input_embeddings().num_embeddings  # the new word
    result = concept_inversion(model, judge, fit, 3, forget, steps=5, per_class=4, sample_steps=2)
    assert result.images.shape == (4, 1, 8, 8) and 0 <= result.metrics["judge_accuracy"] <= 1
    assert model.fingerprint() == before


def test_adversarial_prompt_is_made_of_real_words_before_the_concept(concept_images, judge):
    model, fit, forget = concept_images
    before = model.fingerprint()
    found = search_prompt(model, fit, "the number 3", prefix_tokens=2, steps=10)
    assert model.fingerprint() == before
    vocabulary = model.unet.text_encoder.get_input_embeddings().num_embeddings
    assert int(found.tokens.max()) < vocabulary and len(found.tokens) == model.tokenizer.model_max_length
    assert found.text.endswith("the number 3") and len(found.text.split()) == 5
    assert model.tokenize([found.text])[0].tolist() == found.tokens.tolist()  # a prompt anyone can type
    result = adversarial_prompt_attack(model, judge, fit, "three", 3, forget, steps=2, per_class=3, sample_steps=2)
    assert result.metrics["prompt"].endswith("three") and result.images.shape == (3, 1, 8, 8)
    with pytest.raises(UsageError, match="do not fit the tokenizer's 16 positions"):
        search_prompt(model, fit, "a picture of the digit three drawn by hand on paper", prefix_tokens=6)


def test_prompt_regeneration_judges_each_wording_on_the_same_noises(concept_images, judge):
    model, _, forget = concept_images
    prompts = ["the number 3", "digit 3", "the number 3"]
    result = prompt_regeneration(model, judge, prompts, 3, forget, per_prompt=3, sample_steps=2)
    assert set(result.metrics["per_prompt_accuracy"]) == {"the number 3", "digit 3"}
    assert torch.equal(result.images[:3], result.images[6:])  # same prompt, same noises, same images
    assert result.metrics["best_prompt"] in prompts


def test_tiny_stable_diffusion_with_a_vae_is_audited_end_to_end(tmp_path, digits, splits):
    """The same code a real SD folder takes: a tiny SD pipeline with a VAE (random weights) is unlearned by the
    CLI and audited on RGB 16x16 digits; the report shows the text probes, prompts escaped."""
    folder = write_digit_folder(tmp_path / "digits", digits, classes=range(10))
    tiny_text_model(vae=True).save(tmp_path / "original")
    for k in (1, 2):
        tiny_text_model(seed=k, vae=True).save(tmp_path / f"retrained_{k}")
    # a pipeline trained elsewhere records no split: its members and heldout images are declared, by file
    data = load_image_folder(folder, 8)
    drawn = make_splits(data.labels, 0)
    for role, ids in {"members": drawn.members, "heldout": drawn.heldout}.items():
        (tmp_path / f"{role}.txt").write_text("\n".join(data.files[i] for i in ids))
    declared = ["--members", tmp_path / "members.txt", "--heldout", tmp_path / "heldout.txt"]
    result = invoke("unlearn", "--model", tmp_path / "original", "--data", folder, *declared, "--forget-concept",
                    "three", "--anchor", "digit 5", "--steps", 3, "--batch-size", 8, "--out", tmp_path / "unlearned",
                    "--quiet")
    assert result.exit_code == 0, result.output
    config = tmp_path / "audit.yaml"
    config.write_text(f"data: {folder}\neval_samples_per_class: 3\nforgotten_samples_per_class: 3\neval_steps: 2\n"
                      "extraction_samples_per_class: 3\ncalibration_images: 10\n")
    out = tmp_path / "audit"
    result = invoke("audit", "--config", config, "--model", tmp_path / "original", *declared, "--unlearned",
                    tmp_path / "unlearned", "--retrained", tmp_path / "retrained_1", "--retrained",
                    tmp_path / "retrained_2", "--unverified-references", "--forget-concept", "three", "--forget-label",
                    "three <b>", "--anchor", "digit 5", "--out", out, "--quiet")
    assert result.exit_code in (0, 1, 4), result.output
    results = json.loads((out / "results.json").read_text())
    assert results["forget_spec"]["concept"] == ["three"] and results["forget_spec"]["classes"] == [3]
    assert set(results["membership"]["attacks"]) == {"loss", "secmi", "pia", "pian", "sima", "clid"}
    probes = results["resurrection"]["unlearned"]
    assert set(probes) == {"regeneration", "inversion", "adversarial_prompt", "relearning", "prompt_grid",
                           "ring_a_bell", "p4d", "noise_trajectory", "worst_case"}
    assert "three" in probes["adversarial_prompt"]["prompt"]
    assert {c["name"] for c in results["checks"]} >= {"resurrection", "adversarial_prompt", "relearning",
                                                      "ring_a_bell", "p4d", "noise_trajectory", "worst_resurrection"}
    # prompt -> samples: the given prompt, the 8 unused wordings, the learned word, the adversarial prompt,
    # Ring-A-Bell's embedding and the P4D prompt
    grids = {role: p["prompt_grid"] for role, p in results["resurrection"].items()}
    assert set(grids) == {"original", "unlearned", "reference_1", "reference_2"}
    rows = grids["unlearned"]
    # the prompt given to the erasure, then every training and held-out wording not given (not "three" again)
    assert [r["prompt"] for r in rows[:2]] == ["three", "a handwritten digit three"] and len(rows) == 12
    assert rows[-3]["prompt"] == probes["adversarial_prompt"]["prompt"] and not rows[-3]["same_for_every_model"]
    assert rows[-1]["prompt"] == probes["p4d"]["prompt"] and "'digit 5'" in rows[-2]["prompt"]
    assert all([r["prompt"] for r in g[:-3]] == [r["prompt"] for r in rows[:-3]] for g in grids.values())
    assert rows[1]["judge_accuracy"] == probes["regeneration"]["per_prompt_accuracy"]["a handwritten digit three"]
    report = (out / "report.html").read_text()
    assert "adversarial prompt" in report and "three &lt;b&gt;" in report and "three <b>" not in report
    assert "Attack success per attack" in report and "&#39;digit 5&#39;" in report  # Ring-A-Bell's row, escaped
    prompts_section = report[report.index('<section id="prompts">'):]
    assert prompts_section[:prompts_section.index("</section>")].count("<img") == len(rows) * 4  # x 4 models
    assert (out / "images" / f"unlearned_prompt_{len(rows) - 1}.png").is_file()


def test_gradient_checkpointing_and_bfloat16_keep_the_steps(digits, splits):
    """What an SD-sized UNet needs on a GPU, on the tiny one: recomputed activations give the same steps; bfloat16
    autocast gives nearly the same (float32 weights), and fp16 (which would need a gradient scaler) is refused."""
    model = tiny_text_model()
    task = text_task(digits, splits, concept_spec(["three"], DIGIT_CAPTIONS), model)
    method = METHODS.make("erasediff", **TEXT_FAST["erasediff"])
    plain = method.unlearn(model, task, quiet=True)
    checkpointed = method.unlearn(model, task, quiet=True, gradient_checkpointing=True)
    bf16 = method.unlearn(model, task, quiet=True, mixed_precision="bf16")
    x = seeded_normal(0, range(8), (1, 8, 8), stream="test")
    t, tokens = torch.full((8,), 40), model.tokenize(["digit 3"] * 8)
    with torch.no_grad():
        base, moved = (plain.model.predict_noise(x, t, tokens), model.predict_noise(x, t, tokens))
        assert (checkpointed.model.predict_noise(x, t, tokens) - base).abs().max() < 1e-5
        change = (base - moved).abs().max()
        assert 0 < (bf16.model.predict_noise(x, t, tokens) - base).abs().max() < 0.5 * change
    assert all(p.dtype == torch.float32 for p in bf16.model.unet.parameters())
    assert plain.model.fingerprint() != bf16.model.fingerprint()
    with pytest.raises(UsageError, match="mixed precision must be one of no, bf16; got 'fp16'"):
        method.unlearn(model, task, quiet=True, mixed_precision="fp16")


def test_sample_deletion_erases_image_caption_pairs(digits, splits):
    """A deletion request of (image, caption) pairs by id: the images under their own training captions."""
    model = tiny_text_model()
    ids = tuple(int(i) for i in splits.members[:12])
    task = model.forget_task(digits, splits, ForgetSpec(sample_ids=ids))
    assert task.forget_classes == () and task.forget.ids.tolist() == sorted(ids)
    captions_of = {tuple(r) for c in range(10) for r in model.tokenize(DIGIT_CAPTIONS.captions(c)).tolist()}
    assert {tuple(r) for r in task.forget.labels.tolist()} <= captions_of
    assert task.anchor.tolist() == model.tokenize([""])[0].tolist()
    result = METHODS.make("erasediff", **TEXT_FAST["erasediff"]).unlearn(model, task, quiet=True)
    assert result.model.fingerprint() != model.fingerprint()


def test_attack_command_scores_image_caption_pairs(saved_models, tmp_path):
    out = tmp_path / "attacks"
    result = invoke("attack", "--model", saved_models / "text", "--attacks", "loss,clid", "--forget-class", 3,
                    "--batch-size", 64, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"loss", "clid"} and all(0 <= m["auc"] <= 1 for m in metrics.values())


def test_broken_text_model_folders_are_refused(tmp_path):
    model = tiny_text_model()
    with torch.no_grad():
        next(model.unet.unet.parameters()).fill_(float("nan"))
    model.save(tmp_path / "nan")
    with pytest.raises(UsageError, match=r"model '.*nan' has non-finite weights in conv_in\.weight"):
        load_model(tmp_path / "nan", device="cpu")
    tiny_text_model().save(tmp_path / "partial")
    for part in (tmp_path / "partial" / "text_encoder").iterdir():
        part.unlink()
    with pytest.raises(UsageError, match=r"could not load text-to-image model '.*partial'"):
        load_model(tmp_path / "partial", device="cpu")
    model = tiny_text_model()
    with torch.no_grad():
        next(model.unet.text_encoder.parameters()).fill_(float("nan"))
    model.save(tmp_path / "nan-encoder")  # refused at load, not at step 0 of an erasure
    with pytest.raises(UsageError, match=r"has non-finite weights in text_encoder\."):
        load_model(tmp_path / "nan-encoder", device="cpu")
    tiny_text_model().save(tmp_path / "truncated")
    weights = next((tmp_path / "truncated" / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UsageError, match=r"could not load text-to-image model '.*truncated'"):
        load_model(tmp_path / "truncated", device="cpu")
    tiny_text_model().save(tmp_path / "other-tokenizer")  # a replaced vocabulary: the record no longer matches
    other = build_tokenizer(["one two"])
    shutil.rmtree(tmp_path / "other-tokenizer" / "tokenizer")
    other.save_pretrained(tmp_path / "other-tokenizer" / "tokenizer")
    with pytest.raises(UsageError, match=r"does not match its record \(erasediff\.json\): a file was changed"):
        load_model(tmp_path / "other-tokenizer", device="cpu")
    shutil.rmtree(tmp_path / "other-tokenizer" / "tokenizer")  # no tokenizer at all
    (tmp_path / "other-tokenizer" / "erasediff.json").unlink()  # nor a record to compare with
    with pytest.raises(UsageError, match=r"has a tokenizer of 2 token\(s\), its special tokens only"):
        load_model(tmp_path / "other-tokenizer", device="cpu")
    model = tiny_text_model()
    model.tokenizer.model_max_length = 10**30  # a tokenizer asking for an absurd length
    model.save(tmp_path / "long")
    with pytest.raises(UsageError, match=r"has a tokenizer length of 1000.*; expected 1 to 16"):
        load_model(tmp_path / "long", device="cpu")


def test_a_text_model_of_a_folder_erases_a_class_named_in_words(tmp_path, digits):
    """Any image folder captions its classes by name: a text model trained on it (built-in tokenizer of those
    names) erases a concept named as the folder names it, and is evaluated on held-out wordings."""
    folder = write_digit_folder(tmp_path / "digits", digits)
    for c, name in enumerate(["cat", "golden_retriever", "hot-dog"]):
        (folder / f"digit{c}").rename(folder / name)
    model = tmp_path / "model"
    result = invoke("train", "--kind", "text", "--data", folder, "--steps", 3, "--batch-size", 8, "--out", model,
                    "--quiet")
    assert result.exit_code == 0, result.output
    tokenizer = load_model(model).tokenizer
    assert len(tokenizer.tokenize("a snapshot of the golden retriever")) == 6  # held-out wordings: whole words
    refused = invoke("unlearn", "--model", model, "--data", folder, "--forget-concept", "three", "--out",
                     tmp_path / "refused", "--quiet")
    assert refused.exit_code == 2 and "names no class" in refused.output and "(e.g. 'hot dog')" in refused.output
    assert not (tmp_path / "refused").exists()
    erased = tmp_path / "erased"
    result = invoke("unlearn", "--model", model, "--data", folder, "--forget-concept", "a Golden Retriever",
                    "--anchor", "a photo of a cat", "--steps", 2, "--batch-size", 8, "--out", erased, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((erased / "erasediff.json").read_text())["forget_spec"]["classes"] == [1]
    metrics_path = tmp_path / "metrics.json"
    result = invoke("evaluate", "--model", erased, "--data", folder, "--forget-concept", "golden retriever",
                    "--per-class", 2, "--sample-steps", 2, "--json", metrics_path, "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics["per_class_accuracy"]) == {"0", "1", "2"} and metrics["forgotten_accuracy"] is not None


def test_a_folder_with_captions_gives_every_image_its_own(tmp_path, digits, splits):
    """metadata.jsonl (the Hugging Face image-folder layout) captions each image: the text model trains on those
    captions, and the remaining data of an erasure is conditioned on them; broken caption files are refused."""
    folder = write_digit_folder(tmp_path / "digits", digits)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    lines = [json.dumps({"file_name": name, "text": f"a sketch number {i % 7} of {name.split('/')[0]}"})
             for i, name in enumerate(files)]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    dataset = load_dataset(str(folder))
    assert dataset.captions[5] == "a sketch number 5 of digit0" and len(dataset.captions) == len(dataset)
    assert dataset.fingerprint() != load_dataset(str(write_digit_folder(tmp_path / "plain", digits))).fingerprint()
    model = tmp_path / "model"
    result = invoke("train", "--kind", "text", "--data", folder, "--steps", 2, "--batch-size", 8, "--out", model,
                    "--quiet")
    assert result.exit_code == 0, result.output
    text_model = load_model(model)
    words = ["a", "sketch", "number", "5", "of", "digit", "0"]  # CLIP splits letters from digits
    assert text_model.tokenizer.tokenize("a sketch number 5 of digit0") == [w + "</w>" for w in words]
    folder_splits = make_splits(dataset.labels, seed=0)
    task = text_model.forget_task(dataset, folder_splits, concept_spec(["digit1"], dataset.class_wordings))
    own = text_model.tokenize([dataset.captions[i] for i in task.retain.ids.tolist()])
    assert torch.equal(task.retain.labels, own)
    spec = concept_spec(["digit1"], dataset.class_wordings)  # the "{word}" wording: given, so never probed
    heldout = spec.heldout_ids(dataset.labels, folder_splits).tolist()
    probed = unused_wordings(spec, dataset, heldout)
    wordings = dataset.class_wordings.captions(1, NAMED_TRAIN_TEMPLATES + NAMED_HELDOUT_TEMPLATES)
    assert probed == [w for w in wordings if w != "digit1"] + list(dict.fromkeys(dataset.captions[i] for i in heldout))
    for broken, message in [
        (lines[:-1], "has no caption for 'digit2/"),
        ([*lines, '{"file_name": "digit0/none.png", "text": "x"}'], "'digit0/none.png' is not an image of the folder"),
        ([*lines, '["text"]'], f"line {len(lines) + 1}: expected a JSON object with string 'file_name' and 'text'"),
        ([*lines, lines[0]], f"captions '{files[0]}' twice (lines 1 and {len(lines) + 1})"),
    ]:
        (folder / "metadata.jsonl").write_text("\n".join(broken))
        with pytest.raises(UsageError, match=re.escape(message)):
            load_dataset(str(folder))
    (folder / "metadata.jsonl").unlink()
    (folder / "metadata.jsonl").mkdir()  # a folder, then a link to a device: refused, never silently ignored
    with pytest.raises(UsageError, match=r"metadata\.jsonl' has no PNG or JPEG images"):
        load_dataset(str(folder))
    (folder / "metadata.jsonl").rmdir()
    (folder / "metadata.jsonl").symlink_to("/dev/zero")
    with pytest.raises(UsageError, match=r"caption file .* is not a regular file"):
        load_dataset(str(folder))


def test_a_built_in_tokenizer_of_too_many_words_is_refused_at_once():
    words = [f"w{''.join(chr(97 + int(d)) for d in str(i))}" for i in range(2001)]
    with pytest.raises(ValueError, match="captions hold 2001 distinct words; the built-in tokenizer takes at most"):
        build_tokenizer([" ".join(words)])
