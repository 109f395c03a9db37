"""Card type names (as the CLI and tests spell them) -> virtual card classes, imported lazily."""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .base import VirtualCard


class UnknownCardType(ValueError):
    """The name is not one of the card types this simulator knows."""


class CardTypeUnavailable(RuntimeError):
    """The card type is known but its module cannot be imported (not written yet, or broken)."""


class StateMismatch(ValueError):
    """A state file holds a different kind of card than the one asked for."""


@dataclass(frozen=True)
class CardType:
    name: str
    target: str  # "package.module:ClassName"
    options: dict = field(default_factory=dict)

    def card_class(self) -> type[VirtualCard]:
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # Lazy on purpose: the JCOP card lives in its own package and may not be there yet;
            # only asking for it by name should fail, not importing the registry.
            raise CardTypeUnavailable(
                f"card type {self.name!r} needs {self.target}, which cannot be imported ({exc})"
            ) from exc
        try:
            return getattr(module, class_name)
        except AttributeError:
            raise CardTypeUnavailable(f"card type {self.name!r}: {module_name} has no {class_name}") from None


CARD_TYPES: dict[str, CardType] = {
    "desfire-ev1": CardType("desfire-ev1", "cardsim.desfire:DESFireCard", {"flavour": "ev1"}),
    "desfire-ev2": CardType("desfire-ev2", "cardsim.desfire:DESFireCard", {"flavour": "ev2"}),
    "desfire-ev3": CardType("desfire-ev3", "cardsim.desfire:DESFireCard", {"flavour": "ev3"}),
    "jcop4": CardType("jcop4", "cardsim.jcop:JCOP4Card"),
}


def card_type(name: str) -> CardType:
    try:
        return CARD_TYPES[name]
    except KeyError:
        raise UnknownCardType(f"unknown card type {name!r}; known: {', '.join(sorted(CARD_TYPES))}") from None


def new_card(name: str, **options) -> VirtualCard:
    """A fresh card of type `name`; `options` go to the card's constructor."""
    kind = card_type(name)
    return kind.card_class()(**{**kind.options, **options})


def open_card(name: str, state_path: str | os.PathLike | None = None, **options) -> VirtualCard:
    """A card of type `name`, loaded from `state_path` when that file exists and saved there after
    every command (a new file is written at once, so a test can read it)."""
    if state_path is not None:
        path = Path(state_path)
        if path.exists():
            saved_kind = json.loads(path.read_text()).get("kind")
            if saved_kind != name:
                raise StateMismatch(f"{path} holds a {saved_kind!r} card, not {name!r}")
    card = new_card(name, **options)
    if state_path is not None:
        card.attach_state_file(state_path)
    return card
