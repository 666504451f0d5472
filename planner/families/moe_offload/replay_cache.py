"""On-disk cache of the moe-offload family's pure, slow computations: simulator replays and the physical floor.

A replay (or a floor) is a pure function of its inputs: the configuration, the trace part's arrays and the code
that computes it. The key hashes all three (the source file of the simulator or of the floor included), so an
edit to either invalidates every entry. Entries live in `core.cache.cache_dir()` and are safe to delete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.cache import cache_key, load_npz, save_npz

log = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def source_hash(module_file: str) -> str:
    """sha256 of a source file: code changes invalidate what it computed."""
    return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()[:16]


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() + str(x.dtype) + str(x.shape)
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.floating, float)):
        return repr(float(x))
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def key_of(kind: str, module_file: str, *parts: Any) -> str:
    """Cache key of a computation of `kind` by the code in `module_file` on `parts`."""
    return cache_key(kind, source_hash(module_file), json.dumps(_jsonable(list(parts)), sort_keys=True))


def cached_dataclass(kind: str, key: str, cls: type, compute: Callable[[], Any]) -> Any:
    """The dataclass result of `compute()`, from the cache when present (fields stored as arrays, no pickle)."""
    hit = load_npz(kind, key)
    if hit is not None:
        try:
            values = {}
            for f in dataclasses.fields(cls):
                if f.name not in hit:
                    continue
                v = hit[f.name]
                values[f.name] = v.item() if v.ndim == 0 else v
            if "__json__" in hit:
                values.update(json.loads(str(hit["__json__"].item())))
            return cls(**values)
        except (TypeError, ValueError) as exc:
            log.warning("cache entry %s/%s unreadable (%s); recomputing", kind, key, exc)
    result = compute()
    arrays: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        v = getattr(result, f.name)
        if isinstance(v, (dict, tuple, list)) and not isinstance(v, np.ndarray):
            extra[f.name] = v
        else:
            arrays[f.name] = np.asarray(v)
    arrays["__json__"] = np.asarray(json.dumps(extra, default=float))
    try:
        save_npz(kind, key, arrays)
    except OSError as exc:
        log.warning("could not write cache entry %s/%s (%s)", kind, key, exc)
    return result
