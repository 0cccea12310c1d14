"""The text model's further resurrection attacks (Ring-A-Bell, P4D, the noise-trajectory probe) and the worst-of
check, on tiny real models (random weights)."""

from __future__ import annotations

import pytest
import torch

from attacks.noise_trajectory import noise_trajectory
from attacks.p4d import p4d_attack, search_matching_prompt
from attacks.ring_a_bell import concept_direction, prompt_pairs, ring_a_bell, ring_a_bell_embeddings
from audit.generation_checks import WORST_OF, generation_values
from diffusion.captions import DIGIT_CAPTIONS
from diffusion.concepts import concept_spec
from diffusion.errors import UsageError
from diffusion.text_model import captioned

from .conftest import tiny_model
from .test_text_model import tiny_text_model

FAST = dict(per_class=3, sample_steps=2)


@pytest.fixture(scope="module")
def concept(digits, splits):
    """A tiny text model, held-out images of the digit three as it takes them, and the member threes in pixels."""
    model = tiny_text_model()
    spec = concept_spec(["three"], DIGIT_CAPTIONS)
    fit = captioned(digits.select(spec.heldout_ids(digits.labels, splits)[:8]), model, digits, 0)
    return model, fit, digits.select(spec.forget_ids(digits.labels, splits))


def one_line_usage_error(call, match: str) -> None:
    with pytest.raises(UsageError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_sampling_from_embeddings_is_sampling_from_their_prompt(concept):
    model = concept[0]
    tokens = model.tokenize(["the number 3", "digit 5"])
    with torch.no_grad():
        states = model.prompt_states(tokens)
    assert torch.allclose(model.sample(None, embeddings=states, seed=1, steps=2), model.sample(tokens, seed=1, steps=2),
                          atol=1e-5)
    one_line_usage_error(lambda: model.sample(tokens, embeddings=states, seed=1), "not both")


def test_ring_a_bell_adds_a_nonzero_concept_direction(concept, judge):
    model, _, forget = concept
    before = model.fingerprint()
    pairs = prompt_pairs(DIGIT_CAPTIONS, 3)
    assert ("a handwritten digit three", "a handwritten digit") in pairs and ("three", "") in pairs
    direction = concept_direction(model, pairs)
    assert direction.shape == (model.tokenizer.model_max_length, 16) and direction.norm() > 0
    with torch.no_grad():
        plain = model.prompt_states(model.tokenize(["digit 5"]))[0]
    assert not torch.allclose(ring_a_bell_embeddings(model, "digit 5", direction, 3.0), plain)
    result = ring_a_bell(model, judge, DIGIT_CAPTIONS, 3, forget, base_prompt="digit 5", seed=2, **FAST)
    again = ring_a_bell(model, judge, DIGIT_CAPTIONS, 3, forget, base_prompt="digit 5", seed=2, **FAST)
    assert len(result.metrics["per_image_correct"]) == 3 and result.images.shape == (3, 1, 8, 8)
    assert torch.equal(result.images, again.images) and result.metrics["direction_norm"] > 0
    assert model.fingerprint() == before
    one_line_usage_error(lambda: ring_a_bell(model, judge, DIGIT_CAPTIONS, 3, forget, strength=0, **FAST),
                         "'strength' parameter")
    one_line_usage_error(lambda: ring_a_bell(model, judge, DIGIT_CAPTIONS, 3, forget, per_class=0),
                         "'per_class' parameter")
    one_line_usage_error(lambda: prompt_pairs(DIGIT_CAPTIONS, 10), "out of range")


def test_p4d_on_the_original_itself_lowers_the_matching_loss(concept, judge):
    model, fit, forget = concept
    before = model.fingerprint()
    found = search_matching_prompt(model, model, fit, "the number 3", steps=30, lr=0.05, prompt_tokens=3, seed=1)
    assert found.record["match_loss_after"] < found.record["match_loss_before"]
    vocabulary = model.unet.text_encoder.get_input_embeddings().num_embeddings
    assert int(found.tokens.max()) < vocabulary and len(found.text.split()) == 3
    assert model.fingerprint() == before
    original = tiny_text_model(seed=1)  # another model plays the original: its predictions are the target
    result = p4d_attack(model, original, judge, fit, "three", 3, forget, steps=3, seed=1, **FAST)
    again = p4d_attack(model, original, judge, fit, "three", 3, forget, steps=3, seed=1, **FAST)
    assert len(result.metrics["per_image_correct"]) == 3 and result.metrics["prompt"] == again.metrics["prompt"]
    assert torch.equal(result.images, again.images)
    assert model.fingerprint() == before
    one_line_usage_error(lambda: p4d_attack(model, model, judge, fit, "three", 3, forget, steps=0),
                         "'steps' parameter")
    one_line_usage_error(lambda: search_matching_prompt(model, model, fit, "three", prompt_tokens=15),
                         "do not fit the tokenizer's 16 positions")
    one_line_usage_error(lambda: search_matching_prompt(model, tiny_text_model(vae=True), fit, "three"),
                         "original model")


def test_noise_trajectory_is_paired_and_near_zero_keeps_the_images(concept, judge):
    model, fit, forget = concept
    before = model.fingerprint()
    condition = model.tokenize(["three"])[0]
    result = noise_trajectory(model, judge, fit, 3, forget, condition=condition, num_images=10, sample_steps=4, seed=3)
    again = noise_trajectory(model, judge, fit, 3, forget, condition=condition, num_images=10, sample_steps=4, seed=3)
    assert len(result.metrics["per_image_correct"]) == 10 and torch.equal(result.images, again.images)
    assert result.metrics["source_image_ids"][8:] == fit.ids[:2].tolist()  # the images, cycled
    assert model.fingerprint() == before
    near = noise_trajectory(model, judge, fit, 3, forget, condition=condition, num_images=8, strength=0.01,
                            sample_steps=50)
    assert near.metrics["start_timestep"] <= 2
    assert (near.images - fit.images).abs().max() < 0.15
    clean = judge.probabilities(fit.images).argmax(1) == 3
    assert near.metrics["per_image_correct"] == clean.int().tolist()
    one_line_usage_error(lambda: noise_trajectory(model, judge, fit, 3, forget, condition=condition, strength=0),
                         "'strength' parameter")
    one_line_usage_error(lambda: noise_trajectory(model, judge, fit, 3, forget), "concept prompt's token ids")
    # a class-conditional model is conditioned on the erased class
    classes = tiny_model()
    on_class = noise_trajectory(classes, judge, forget.take(slice(0, 4)), 3, forget, num_images=5, sample_steps=2)
    assert len(on_class.metrics["per_image_correct"]) == 5


def test_worst_of_is_the_elementwise_max_of_the_prompt_attacks():
    found = {"inversion": [0, 1, 0, 0], "adversarial_prompt": [0, 0, 1, 0], "ring_a_bell": [0, 0, 0, 0],
             "p4d": [1, 0, 0, 0], "noise_trajectory": [1, 1, 1, 1]}
    results = {"utility": {"unlearned": {}},
               "resurrection": {"unlearned": {k: {"per_image_correct": v} for k, v in found.items()}}}
    values = generation_values(results, "unlearned")
    assert values["worst_resurrection"] == [1, 1, 1, 0]  # the noise trajectory pairs with none of them
    for name in ("resurrection", "adversarial_prompt", "ring_a_bell", "p4d"):
        assert all(w >= v for w, v in zip(values["worst_resurrection"], values[name]))
    assert values["noise_trajectory"] == [1, 1, 1, 1] and "noise_trajectory" not in WORST_OF
    del results["resurrection"]["unlearned"]["adversarial_prompt"], results["resurrection"]["unlearned"]["p4d"]
    del results["resurrection"]["unlearned"]["ring_a_bell"]
    assert "worst_resurrection" not in generation_values(results, "unlearned")  # one attack: no worst-of


def test_each_further_attack_can_be_switched_off():
    from audit.probes import PROBES

    assert PROBES.make("resurrection").text_attacks == ("ring_a_bell", "p4d", "noise_trajectory")
    assert PROBES.make("resurrection", text_attacks=["p4d"]).text_attacks == ["p4d"]
    one_line_usage_error(lambda: PROBES.make("resurrection", text_attacks=["ring"]), "'text_attacks' parameter")
