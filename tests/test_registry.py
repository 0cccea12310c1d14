"""One registry for methods and attacks: declared parameters, checked on creation, open to plugins."""

from __future__ import annotations

import importlib
import sys
import textwrap
from numbers import Integral, Real

import pytest

from attacks import ATTACKS, Attack
from diffusion.errors import UsageError
from diffusion.params import Interval, Options, SequenceOf, short_repr, validate_params
from diffusion.registry import Registry
from unlearn import METHODS, Unlearner

from .conftest import tiny_model


@pytest.mark.parametrize("registry", [METHODS, ATTACKS], ids=["methods", "attacks"])
def test_every_parameter_is_declared_and_the_defaults_satisfy_it(registry):
    for name in registry:
        cls = registry[name]
        assert set(cls._parameter_constraints) == set(cls.param_names()), name
        instance = registry.make(name)
        assert type(instance).name == name


def test_constraints_read_like_scikit_learn():
    table = {"lr": [Interval(Real, 0, None, closed="neither")], "decay": [None, Interval(Real, 0, 1)],
             "kind": [Options("a", "b")], "timesteps": [SequenceOf(Interval(Integral, 1, 9))]}
    validate_params(table, {"lr": 1, "decay": None, "kind": "a", "timesteps": (1, 9)}, "Thing")
    for bad, message in [
        ({"lr": 0.0}, r"The 'lr' parameter of Thing must be a float in \(0, inf\). Got 0.0 instead."),
        ({"lr": float("inf")}, "Got inf instead"),
        ({"lr": True}, "Got True instead"),
        ({"decay": float("nan")}, r"'decay' parameter of Thing must be None or a float in \[0, 1\]. Got nan"),
        ({"kind": "c"}, r"must be one of \['a', 'b'\]. Got 'c'"),
        ({"timesteps": []}, "a list of at least 1 item"),
        ({"timesteps": [1, 10]}, r"each an int in \[1, 9\]"),
    ]:
        params = {"lr": 1.0, "decay": 0.5, "kind": "a", "timesteps": [1]} | bad
        with pytest.raises(UsageError, match=message):
            validate_params(table, params, "Thing")
    assert len(short_repr("x" * 1000)) <= 80 and len(short_repr([list(range(10**4))] * 10**4)) <= 80
    assert "digits" in short_repr(10**5000)


def test_bad_parameters_fail_on_creation_before_any_work():
    with pytest.raises(UsageError, match=r"The 'lr' parameter of EraseDiff must be a float in \(0, inf\)"):
        METHODS.make("erasediff", lr=-1)
    with pytest.raises(UsageError, match=r"'timesteps' parameter of LossAttack must be a list of at least 1"):
        ATTACKS.make("loss", timesteps=[])
    with pytest.raises(UsageError, match="'nope' is not a parameter of attack 'secmi'"):
        ATTACKS.make("secmi", nope=1)
    for clash in ("name", "self"):  # the registry's own argument names are parameters like any other
        with pytest.raises(UsageError, match=f"'{clash}' is not a parameter of unlearning method 'erasediff'"):
            METHODS.make("erasediff", **{clash: "x"})


def test_attack_checks_against_the_model_before_scoring():
    short = tiny_model()  # a 100-step schedule: the paper's t_sec = 100 maps to a lower timestep of equal noise
    assert ATTACKS.make("secmi").check(short)["model_t_sec"] < 100
    with pytest.raises(UsageError, match="'interval' parameter of SecMI must divide 't_sec'"):
        ATTACKS.make("secmi", t_sec=100, interval=30).check(short)


def test_a_registry_refuses_a_foreign_class_and_a_name_clash():
    registry: Registry[Unlearner] = Registry("unlearning method", Unlearner, "erasediff.test-none")
    with pytest.raises(TypeError, match="must subclass Unlearner"):
        registry.register(ATTACKS["loss"])
    registry.register(METHODS["finetune"])
    clash = type("Other", (METHODS["finetune"],), {"name": "finetune"})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(clash)


PLUGIN = '''
from unlearn.finetune import Finetune


class GentleFinetune(Finetune):
    """A third-party method: fine-tuning under its own name."""

    name = "gentle_finetune"
'''


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A package installed nowhere but on sys.path, declaring an ``erasediff.methods`` entry point."""
    (tmp_path / "gentle_plugin.py").write_text(PLUGIN)
    info = tmp_path / "gentle_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gentle-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [erasediff.methods]
        gentle_finetune = gentle_plugin:GentleFinetune
        broken = gentle_plugin:DoesNotExist
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("gentle_plugin", None)


def test_a_plugin_method_registers_through_its_entry_point(plugin_package, caplog):
    registry: Registry[Unlearner] = Registry("unlearning method", Unlearner, "erasediff.methods")
    for name in METHODS:
        registry.register(METHODS[name])
    assert "gentle_finetune" in registry.names()
    method = registry.make("gentle_finetune", steps=2)
    assert type(method).__name__ == "GentleFinetune" and method.steps == 2
    assert "skipped unlearning method plugin 'broken'" in caplog.text  # a broken plugin is named, not fatal
    with pytest.raises(UsageError, match="unknown unlearning method 'broken'"):
        registry.make("broken")


def test_plugin_attack_group_is_separate(plugin_package):
    registry: Registry[Attack] = Registry("attack", Attack, "erasediff.attacks")
    assert "gentle_finetune" not in registry
