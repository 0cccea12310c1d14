"""Parameters declared once per class as constraints, and checked in one place before any work.

The shape is scikit-learn's ``_parameter_constraints``: a table ``{name: [constraint, ...]}`` where a value
is valid when it satisfies ANY constraint of its list; ``None`` in a list allows ``None``. A failure reads
"The 'lr' parameter of EraseDiff must be a float in (0, inf). Got -1.0 instead.". Functions declare theirs with
:func:`checks_arguments`; the audit's config checks its limits with the same :class:`Interval`.
"""

from __future__ import annotations

import functools
import inspect
import math
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, TypeVar

from .errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


class _ShortRepr(reprlib.Repr):
    """``reprlib`` with integers too: ``repr`` of a huge int is slow, long, or refused (over 4300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()
_REPR.maxlevel = 3


def cut_text(text: str, limit: int = 80) -> str:
    """``text``, cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any) -> str:
    """A repr of ``value`` of at most 80 characters, built without expanding large or shared structures
    (a YAML alias bomb, a 5,000-digit integer): what an error message may quote."""
    return cut_text(_REPR.repr(value))


class Constraint(ABC):
    """One acceptable form of a parameter value."""

    @abstractmethod
    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` has this form."""

    @abstractmethod
    def __str__(self) -> str:
        """The form in words, as it reads after "must be"."""


class Interval(Constraint):
    """A number of ``kind`` (``Integral`` or ``Real``) in an interval; bools never count, NaN and inf never do.

    ``closed`` is ``both``, ``left``, ``right`` or ``neither``; ``None`` bounds are unbounded.
    """

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str = "both"):
        if kind not in (Integral, Real) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({kind}, closed={closed!r})")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and not math.isfinite(value):
            return False
        left_ok = self.left is None or (value >= self.left if self.closed in ("both", "left") else value > self.left)
        right_ok = self.right is None or (
            value <= self.right if self.closed in ("both", "right") else value < self.right
        )
        return left_ok and right_ok

    def bounds(self) -> str:
        """The interval in words, e.g. ``[0, 2**31)`` (a large power of two written as one)."""

        def text(bound: float | None, unbounded: str) -> str:
            if bound is None:
                return unbounded
            if isinstance(bound, int) and bound >= 2**16 and bound & (bound - 1) == 0:
                return f"2**{bound.bit_length() - 1}"
            return f"{bound:g}"

        opening = "[" if self.closed in ("both", "left") and self.left is not None else "("
        closing = "]" if self.closed in ("both", "right") and self.right is not None else ")"
        return f"{opening}{text(self.left, '-inf')}, {text(self.right, 'inf')}{closing}"

    def __str__(self) -> str:
        return f"{'an int' if self.kind is Integral else 'a float'} in {self.bounds()}"


class Options(Constraint):
    """One of a fixed set of values."""

    def __init__(self, *options: Any):
        self.options = options

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == option and type(value) is type(option) for option in self.options)

    def __str__(self) -> str:
        return f"one of {list(self.options)}"


class Text(Constraint):
    """A non-empty string (a path, a model id)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)

    def __str__(self) -> str:
        return "a non-empty string"


class SequenceOf(Constraint):
    """A list or tuple of at least ``min_length`` items, each satisfying ``item``."""

    def __init__(self, item: Constraint, *, min_length: int = 1):
        self.item, self.min_length = item, min_length

    def is_satisfied_by(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_length
                and all(self.item.is_satisfied_by(v) for v in value))

    def __str__(self) -> str:
        return f"a list of at least {self.min_length} item(s), each {self.item}"


def _describe(allowed: Sequence[Constraint | None]) -> str:
    return " or ".join("None" if c is None else str(c) for c in allowed)


def validate_params(
    constraints: Mapping[str, Sequence[Constraint | None]], params: Mapping[str, Any], owner: str
) -> None:
    """Raise :class:`UsageError` for the first value in ``params`` that satisfies none of its constraints."""
    for name, allowed in constraints.items():
        value = params[name]
        if value is None and None in allowed:
            continue
        if not any(c is not None and c.is_satisfied_by(value) for c in allowed):
            raise UsageError(
                f"The '{name}' parameter of {owner} must be {_describe(allowed)}. Got {short_repr(value)} instead."
            )


def checks_arguments(constraints: Mapping[str, Sequence[Constraint | None]]) -> Callable[[F], F]:
    """Decorator: the named arguments of a function checked against ``constraints`` (defaults included) before it
    runs, with :func:`validate_params`'s message ("The 'confidence' parameter of decide must be ...")."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        unknown = set(constraints) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{function.__name__} has no parameter(s) {sorted(unknown)}")

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            validate_params(constraints, {name: bound.arguments[name] for name in constraints}, function.__name__)
            return function(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate


class Parameterized:
    """scikit-learn's convention: every ``__init__`` argument is stored under its own name and declared in
    ``_parameter_constraints``; :meth:`validate_params` checks them all (registries call it on creation)."""

    _parameter_constraints: ClassVar[dict[str, list[Constraint | None]]] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the ``__init__`` parameters."""
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]

    def get_params(self) -> dict:
        """The parameters, JSON-ready (tuples as lists)."""
        return {name: (list(v) if isinstance(v, tuple) else v)
                for name, v in ((n, getattr(self, n)) for n in self.param_names())}

    def validate_params(self) -> None:
        """Raise :class:`UsageError` for any parameter outside its declared constraints."""
        validate_params(self._parameter_constraints, {n: getattr(self, n) for n in self.param_names()},
                        type(self).__name__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"
