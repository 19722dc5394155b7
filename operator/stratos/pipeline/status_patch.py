"""The smallest JSON merge patch that turns one status into another."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys whose value changed; removed keys map to None (merge-patch deletion).

    A merge patch merges objects key by key, so a changed object (``cost``, ``training``) is patched with
    what changed in it, and a key it no longer has maps to None: sending the new object whole would
    leave such a key in the stored status. Lists (conditions, candidates) are replaced whole, as JSON
    merge patch does anyway. ``None`` values inside ``new`` are dropped from nested dicts so that stored
    status carries no nulls.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        clean = prune_none(value)
        if clean is None and key not in old:
            continue
        if key not in old or old[key] != clean:
            patch[key] = _merge_patch(old[key], clean) if key in old else clean
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch


def _merge_patch(old: Any, new: Any) -> Any:
    """What turns ``old`` into ``new`` as a merge patch: for two objects, their changed keys (recursively)
    and None for the keys ``new`` lacks; anything else is replaced by ``new``."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {k: _merge_patch(old[k], v) if k in old else v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def prune_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_none(v) for v in value]
    return value
