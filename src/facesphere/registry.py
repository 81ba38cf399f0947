"""The name -> factory registry behind every stage (timm style).

Each stage (detectors, landmarkers, recognizers, backbones, heads, cluster methods) owns one
`Registry` and exposes `register_<stage>(name)`, `create_<stage>(name, **options)` and
`list_<stage>()`. A registry given its stage's package imports every module in it on first use,
so adding a model is one file with one decorator. Factories take explicit keyword options only
(no ``**kwargs``), so an unknown name or option is refused with the list of what is known
instead of being ignored.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from facesphere.cards import ModelCard
from facesphere.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; `register` is a decorator, `create` builds by name."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._loaded = package is None
        self._loading = threading.RLock()
        self._loader: int | None = None  # the thread importing the modules now
        self._factories: dict[str, Callable[..., T]] = {}
        self._forwards: dict[str, type | None] = {}
        self._cards: dict[str, ModelCard] = {}

    def register(
        self, name: str, forwards_to: type | None = None, card: ModelCard | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding a factory under `name`. Its options are its explicit keyword
        parameters; a factory that passes ``**kwargs`` on to a class names it in `forwards_to`,
        whose constructor's parameters are then its options too. A pretrained model registers
        its `card`."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            kinds = {p.kind for p in inspect.signature(factory).parameters.values()}
            if inspect.Parameter.VAR_KEYWORD in kinds and forwards_to is None:
                raise TypeError(
                    f"{self.kind} {name!r}: a factory with **kwargs must name `forwards_to`"
                )
            self._factories[name] = factory
            self._forwards[name] = forwards_to
            if card is not None:
                self._cards[name] = card
            return factory

        return decorator

    def _load(self) -> None:
        """Import every module of the stage's package (once, on first use): a model registers
        itself by being a module there, and importing the package alone stays cheap. Threads
        that ask meanwhile wait until every module is imported (concurrent requests of a
        service would otherwise see a half-filled registry)."""
        if self._loaded:
            return
        with self._loading:
            if self._loaded or self._loader == threading.get_ident():
                return  # another thread finished it, or this one is inside it
            assert self._package is not None
            self._loader = threading.get_ident()
            try:
                package = importlib.import_module(self._package)
                for module in pkgutil.iter_modules(package.__path__):
                    importlib.import_module(f"{self._package}.{module.name}")
                self._loaded = True
            finally:
                self._loader = None

    def factory(self, name: str) -> Callable[..., T]:
        """The factory registered as `name` (ConfigError listing the known names if none)."""
        self._load()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def options(self, name: str) -> list[str]:
        """The keyword options the factory of `name` accepts."""
        found = _named_parameters(self.factory(name))
        target = self._forwards[name]
        if target is not None:
            found += [p for p in _named_parameters(target) if p not in found]
        return found

    def check(self, name: str, **options: Any) -> None:
        """ConfigError unless `name` is registered and takes every one of `options`; nothing
        is built."""
        accepted = self.options(name)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(accepted) or 'none'}"
            )

    def create(self, name: str, **options: Any) -> T:
        """Build `name` with `options`; an option the factory does not take is a ConfigError."""
        self.check(name, **options)
        return self.factory(name)(**options)

    def card(self, name: str) -> ModelCard | None:
        """The model card registered with `name` (None for untrained architectures)."""
        self.factory(name)
        return self._cards.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._factories


def _named_parameters(function: Callable[..., Any]) -> list[str]:
    """Names of the parameters of `function` that can be passed by keyword."""
    passable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind in passable]
