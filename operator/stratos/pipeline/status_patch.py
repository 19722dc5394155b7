"""The smallest JSON merge patch that turns one status into another."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys whose value changed; removed keys map to None (merge-patch deletion).

    Lists (conditions, candidates) are replaced whole, as JSON merge patch does anyway. ``None`` values
    inside ``new`` are dropped from nested dicts so that stored status carries no nulls.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        clean = prune_none(value)
        if clean is None and key not in old:
            continue
        if key not in old or old[key] != clean:
            patch[key] = clean
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch


def prune_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_none(v) for v in value]
    return value
