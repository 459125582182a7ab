"""Loss registry: losses are addressed by name (``"multi:P+I"``) and built with :func:`get_loss`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from inf_embed.losses.base import ContrastiveLoss

logger = logging.getLogger(__name__)

__all__ = ["canonical_loss_name", "get_loss", "list_losses", "register_loss"]

LossFactory = Callable[..., ContrastiveLoss]
_F = TypeVar("_F", bound=LossFactory)

_REGISTRY: dict[str, LossFactory] = {}

# Order of the terms in canonical names, as in the paper's table (P, then I, then IQ), then our Q.
_TERM_ORDER = {"P": 0, "I": 1, "IQ": 2, "IX": 3, "Q": 4}


def register_loss(name: str) -> Callable[[_F], _F]:
    """Decorator registering a factory ``(**kwargs) -> ContrastiveLoss`` under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(factory: _F) -> _F:
        if name in _REGISTRY:
            raise ValueError(f"loss name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def canonical_loss_name(name: str) -> str:
    """Normalise a loss name: strip spaces, lower-case the mode, order the terms as P, I, IQ.

    ``"Multi: I + P"`` becomes ``"multi:P+I"``. Unknown term letters are kept as written, so that lookup
    fails with the list of valid names.
    """
    if not isinstance(name, str):
        raise ValueError(f"loss name: expected a string such as 'multi:P+I', got {type(name).__name__}")
    compact = "".join(name.split())
    mode, sep, terms = compact.partition(":")
    if not sep:
        return compact
    parts = [t.upper() if t.upper() in _TERM_ORDER else t for t in terms.split("+")]
    parts.sort(key=lambda t: _TERM_ORDER.get(t, len(_TERM_ORDER)))
    return f"{mode.lower()}:{'+'.join(parts)}"


def list_losses() -> list[str]:
    """Names accepted by :func:`get_loss`, in registration order."""
    return list(_REGISTRY)


def get_loss(name: str, **kwargs: Any) -> ContrastiveLoss:
    """Build the loss registered under ``name`` (spaces, mode case and term order are normalised).

    Args:
        name: e.g. ``"uni:P"``, ``"multi:P+I"``, ``"uni:P+I+IQ"``; see :func:`list_losses`.
        **kwargs: constructor options, e.g. ``temperature=0.05``, ``gather_across_ranks=True``.

    Returns:
        A loss module; call it on embeddings (see :class:`inf_embed.losses.InfIRLoss`).

    Raises:
        ValueError: ``name`` is unknown (the message lists the valid names), or an option is invalid.
    """
    key = canonical_loss_name(name)
    factory = _REGISTRY.get(key)
    if factory is None:
        raise ValueError(f"unknown loss {name!r}; expected one of: {', '.join(_REGISTRY)}")
    return factory(**kwargs)
