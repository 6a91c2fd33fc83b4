"""Helpers for objects as YAML or the Kubernetes API gives them: plain dicts and lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard


def is_mapping(value: object) -> TypeGuard[Mapping[Any, Any]]:
    """``isinstance(value, Mapping)``, fast for the dicts every parser produces."""
    return type(value) is dict or isinstance(value, Mapping)
