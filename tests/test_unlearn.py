"""The contract every registered unlearner keeps, on a tiny real diffusers model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffusion.errors import RunError, UsageError
from diffusion.model import DiffusionModel
from diffusion.seeding import seeded_normal
from diffusion.splits import ForgetSpec, ForgetTask
from diffusion.training import TrainConfig, train_denoiser
from unlearn import METHODS, EraseDiff, UnlearnResult
from unlearn.stopping import internal_membership_auc

from .conftest import TINY, tiny_model

# A few steps of each method, sized for the tiny model; every registered method must appear here.
FAST = {
    "erasediff": dict(steps=8, lr=1e-3, eta=1.0, batch_size=32),  # a strong push, so a few steps show it
    "retrain": dict(steps=8),
    "refinetune": dict(steps=8, batch_size=32, lr=1e-3),  # its base: the model given, saved (``saved_base``)
    "finetune": dict(steps=8, batch_size=32),
    "gradient_ascent": dict(steps=8, lr=1e-3, batch_size=32),
    "random_label": dict(steps=8, lr=1e-3, batch_size=32),
    "salun": dict(steps=8, lr=1e-3, batch_size=32),
    "selective_amnesia": dict(steps=8, lr=1e-3, batch_size=32, fisher_samples_per_class=2,
                              replay_samples_per_class=4, sample_steps=2),
}
# Methods that never look at D_f and so need not raise its loss within a few steps: fine-tuning on D_r.
IGNORES_FORGET_SET = {"finetune", "refinetune"}
# Methods that erase a concept from a text-to-image model only (their contract: tests/test_text_model.py).
TEXT_ONLY = {"esd_x", "esd_u"}


@pytest.fixture(scope="module")
def trained(digits, splits) -> DiffusionModel:
    """The tiny model after 150 steps on the members: it denoises them far better than at initialisation."""
    model = tiny_model(seed=1)
    config = TrainConfig(steps=150, batch_size=64, seed=1, **TINY)
    train_denoiser(model, digits.images[splits.members], digits.labels[splits.members], config, quiet=True)
    return model


@pytest.fixture(scope="module")
def saved_base(trained, tmp_path_factory) -> str:
    """``trained`` saved as a folder: the base ``refinetune`` fine-tunes again."""
    path = tmp_path_factory.mktemp("base") / "model"
    trained.save(path)
    return str(path)


def method_params(name: str, base: str) -> dict:
    """The fast setting of method ``name``, with the saved base for ``refinetune``."""
    return {**FAST[name], "base": base} if name == "refinetune" else FAST[name]


@pytest.fixture(scope="module")
def task(digits, splits) -> ForgetTask:
    return ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(0,)))


def forget_set_loss(model: DiffusionModel, task: ForgetTask) -> float:
    """Mean DDPM loss on the forget images at fixed timesteps with noise fixed per sample id."""
    x, y, ids = task.forget.images, task.forget.labels, task.forget.ids.tolist()
    losses = []
    with torch.no_grad():
        for t in (5, 20, 50):
            noise = seeded_normal(0, ids, x.shape[1:], stream=f"test-loss-{t}")
            losses.append(model.denoising_loss(x, y, torch.full((len(x),), t), noise).mean().item())
    return sum(losses) / len(losses)


def test_every_method_has_a_fast_setting():
    assert set(FAST) | TEXT_ONLY == set(METHODS) and not set(FAST) & TEXT_ONLY


@pytest.mark.parametrize("name", sorted(FAST))
def test_unlearner_contract(name, trained, task, saved_base):
    before = trained.fingerprint()
    params = method_params(name, saved_base)
    unlearner = METHODS.make(name, **params)
    result = unlearner.unlearn(trained, task, seed=3, quiet=True)

    assert isinstance(result, UnlearnResult)
    assert trained.fingerprint() == before, "the input model was modified"
    assert isinstance(result.model, DiffusionModel) and result.model is not trained
    assert result.model.fingerprint() != before
    assert result.method == name and result.params == unlearner.get_params()
    assert result.steps == FAST[name]["steps"] and result.seconds > 0
    assert result.curves and all(isinstance(v, float) for values in result.curves.values() for v in values)
    assert {k: v for k, v in result.params.items() if k in FAST[name]} == FAST[name]

    again = METHODS.make(name, **params).unlearn(trained, task, seed=3, quiet=True)
    assert again.model.fingerprint() == result.model.fingerprint(), "same seed, different result"
    other = METHODS.make(name, **params).unlearn(trained, task, seed=4, quiet=True)
    assert other.model.fingerprint() != result.model.fingerprint()

    if name not in IGNORES_FORGET_SET:
        assert forget_set_loss(result.model, task) > forget_set_loss(trained, task) * 1.05


def test_gradient_methods_log_one_value_per_step(trained, task):
    for name in ("erasediff", "gradient_ascent", "random_label", "salun", "selective_amnesia", "finetune"):
        curves = METHODS.make(name, **FAST[name]).unlearn(trained, task, quiet=True).curves
        assert all(len(values) == FAST[name]["steps"] for values in curves.values()), name


def test_callback_sees_the_model_during_unlearning(trained, task):
    seen = []
    METHODS.make("erasediff", **FAST["erasediff"]).unlearn(
        trained, task, quiet=True, callback=lambda step, model, seconds: seen.append((step, seconds)),
        callback_every=4,
    )
    assert [step for step, _ in seen] == [4, 8]
    assert 0 < seen[0][1] < seen[1][1]


def test_ema_follows_the_weights_until_ema_start_then_averages(trained, task):
    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.unet.parameters()])

    def weights(**ema):
        unlearner = METHODS.make("finetune", **FAST["finetune"], **ema)
        return flat(unlearner.unlearn(trained, task, seed=3, quiet=True).model)

    raw = weights()
    assert torch.allclose(weights(ema_decay=0.9, ema_start=7), raw, atol=1e-6)  # copies through step 8 of 8
    averaged = weights(ema_decay=0.9, ema_start=2)
    assert not torch.allclose(averaged, raw, atol=1e-4)
    assert (averaged - flat(trained)).norm() < (raw - flat(trained)).norm()


def test_make_unlearner_rejects_unknown_names():
    with pytest.raises(UsageError, match=r"unknown unlearning method 'nope'.*erasediff.*salun"):
        METHODS.make("nope")
    with pytest.raises(UsageError, match=r"'alpha' is not a parameter of unlearning method 'erasediff'.*inner_steps"):
        METHODS.make("erasediff", alpha=1.0)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("erasediff", dict(lr=-1.0), r"The 'lr' parameter of EraseDiff must be a float in \(0, inf\). Got -1.0"),
        ("erasediff", dict(forget_target="noise"), r"'forget_target' parameter of EraseDiff must be one of"),
        ("erasediff", dict(steps=0), r"'steps' parameter of EraseDiff must be an int in \[1, inf\). Got 0"),
        ("salun", dict(sparsity=1.5), r"'sparsity' parameter of SalUn must be a float in \[0, 1\)"),
        ("retrain", dict(steps=2.5), r"'steps' parameter of Retrain must be None or an int in \[1, inf\)"),
        ("finetune", dict(ema_start=-1), r"'ema_start' parameter of Finetune must be an int in \[0, inf\). Got -1"),
    ],
)
def test_bad_parameters_are_usage_errors(name, params, message, trained, task):
    with pytest.raises(UsageError, match=message):
        METHODS.make(name, **params).unlearn(trained, task, quiet=True)


def test_bad_tasks_are_usage_errors(digits, splits, trained):
    with pytest.raises(UsageError, match="every class"):
        ForgetTask.from_spec(digits, splits, ForgetSpec(classes=tuple(range(10))))
    with pytest.raises(UsageError, match="forget set is empty"):
        ForgetSpec()
    empty = digits.select([])
    with pytest.raises(UsageError, match="forget set is empty"):
        ForgetTask(empty, digits.select(splits.members), (), 10)
    sample_task = ForgetTask.from_spec(digits, splits, ForgetSpec(sample_ids=tuple(splits.members[:5])))
    with pytest.raises(UsageError, match="selective_amnesia needs a forget task naming at least one class"):
        METHODS.make("selective_amnesia").unlearn(trained, sample_task, quiet=True)
    five_classes = ForgetTask.from_spec(digits, splits, ForgetSpec(classes=(0,)))
    with pytest.raises(UsageError, match="the model has 5 class labels but the forget task has 10"):
        METHODS.make("erasediff").unlearn(DiffusionModel.create(num_classes=5, device="cpu", **TINY),
                                            five_classes, quiet=True)


@pytest.mark.parametrize("name", ["erasediff", "salun", "finetune"])
def test_non_finite_loss_stops_with_a_run_error(name, trained, task):
    broken = trained.copy()
    with torch.no_grad():
        next(broken.unet.parameters()).fill_(float("nan"))
    with pytest.raises(RunError, match=rf"{name}: loss_\w+ became nan at step 0"):
        METHODS.make(name, **FAST[name]).unlearn(broken, task, quiet=True)


def test_sample_level_forgetting_keeps_the_other_images(digits, splits, trained):
    ids = tuple(int(i) for i in splits.members[::22][:20])  # 20 members of mixed classes
    task = ForgetTask.from_spec(digits, splits, ForgetSpec(sample_ids=ids))
    assert task.forget_classes == () and len(task.forget) == 20 and len(task.retain) == len(splits.members) - 20
    assert len(set(task.forget.labels.tolist())) > 3
    result = METHODS.make("erasediff", **FAST["erasediff"]).unlearn(trained, task, quiet=True)
    assert forget_set_loss(result.model, task) > forget_set_loss(trained, task) * 1.05


def test_stopping_rule_stops_where_a_run_of_that_length_ends(digits, splits, trained):
    """A rule that is met at its first probe ends the run there, with exactly the weights a run of that many
    steps returns, and logs the probe; without non-members the rule is refused in one line."""
    samples = ForgetTask.from_spec(digits, splits, ForgetSpec(sample_ids=tuple(splits.members[:40].tolist())))
    samples = replace(samples, nonmembers=digits.select(splits.heldout[:40]))
    stopped = EraseDiff(steps=12, batch_size=16, stop_every=4, stop_margin=0.5).unlearn(trained, samples, quiet=True)
    short = EraseDiff(steps=4, batch_size=16).unlearn(trained, samples, quiet=True)
    assert stopped.steps == 4 and len(stopped.curves["internal_auc"]) == 1
    assert stopped.model.fingerprint() == short.model.fingerprint()
    never = EraseDiff(steps=8, batch_size=16, stop_every=4, stop_margin=0.0).unlearn(trained, samples, quiet=True)
    # the forget images still look trained on after 8 small steps: a margin of 0 never stops, both probes logged
    assert never.steps == 8 and len(never.curves["internal_auc"]) == 2 and min(never.curves["internal_auc"]) > 0.5
    with pytest.raises(UsageError, match="stop_every needs non-member images"):
        EraseDiff(stop_every=4).check(replace(samples, nonmembers=None), trained)


def test_internal_probe_sees_the_members_of_a_trained_model(digits, splits, trained):
    members, nonmembers = digits.select(splits.members[:100]), digits.select(splits.heldout[:100])
    assert internal_membership_auc(trained, members, nonmembers, seed=0) > 0.55
    assert internal_membership_auc(trained, nonmembers, digits.select(splits.heldout[100:200]), seed=0) < 0.6
