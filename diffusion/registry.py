"""A registry of named classes (unlearning methods, attacks) that other packages extend through entry points.

After opacus's accountant registry: ``register`` adds a class under its ``name``, ``make`` builds one from a
name and parameters and validates them before any work. A third-party package plugs in without editing this
one by declaring, in its own pyproject.toml::

    [project.entry-points."erasediff.methods"]
    my_method = "my_package.module:MyMethod"
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import UsageError
from .params import Parameterized

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Parameterized)


class Registry(Generic[T]):
    """Named subclasses of ``base``, built-in ones registered at import, plugins loaded from ``group`` on first use.

    Args:
        kind: what the entries are, for messages ("unlearning method", "attack").
        base: the class every entry must subclass.
        group: the entry-point group plugins declare themselves in.
    """

    def __init__(self, kind: str, base: type[T], group: str):
        self.kind, self.base, self.group = kind, base, group
        self._classes: dict[str, type[T]] = {}
        self._plugins_loaded = False

    def register(self, cls: type[T]) -> type[T]:
        """Add ``cls`` under ``cls.name`` (usable as a class decorator)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"a registered {self.kind} must subclass {self.base.__name__}; got {cls!r}")
        known = self._classes.get(cls.name)
        if known is not None and known is not cls:
            raise ValueError(f"{self.kind} '{cls.name}' is already registered ({known.__module__}.{known.__name__})")
        self._classes[cls.name] = cls
        return cls

    def _load_plugins(self) -> None:
        """Register the classes other packages declare under the entry-point group (once)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in metadata.entry_points(group=self.group):
            try:
                cls = entry.load()
                if getattr(cls, "name", None) != entry.name:
                    raise ValueError(f"its class is named '{getattr(cls, 'name', None)}'")
                self.register(cls)
            except Exception as error:  # noqa: BLE001 (a broken plugin must not break the built-in entries)
                logger.warning("skipped %s plugin '%s' (%s): %s", self.kind, entry.name, entry.value, error)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_plugins()
        return sorted(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __getitem__(self, name: str) -> type[T]:
        """The class registered as ``name``; a :class:`UsageError` lists the known names."""
        if name not in self:
            raise UsageError(f"unknown {self.kind} '{name}'; expected one of: {', '.join(self.names())}")
        return self._classes[name]

    def make(self, name: str, /, **params) -> T:
        """The entry ``name`` built with ``params``, every parameter checked against its constraints."""
        cls = self[name]
        allowed = cls.param_names()
        for key in params:
            if key not in allowed:
                raise UsageError(f"'{key}' is not a parameter of {self.kind} '{name}'; its parameters are: "
                                 f"{', '.join(allowed)}")
        instance = cls(**params)
        instance.validate_params()
        return instance

    def parse_names(self, text: str | list[str], option: str) -> list[str]:
        """Names from a comma-separated string (or a list), each known and kept once, in order."""
        parts = text.split(",") if isinstance(text, str) else list(text)
        names = list(dict.fromkeys(part.strip() for part in parts if part.strip()))
        if not names:
            raise UsageError(f"{option} needs at least one {self.kind}; expected some of: {', '.join(self.names())}")
        for name in names:
            self[name]
        return names
