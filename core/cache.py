"""The on-disk cache (trained weights, routing traces, hit curves, measured sensitivities).

`$PLANNER_CACHE_DIR`, else `$XDG_CACHE_HOME/planner`, else `~/.cache/planner`. Entries are keyed by
a hash of everything that determines them, written atomically, and safe to delete at any time.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """Directory for cached artefacts."""
    if os.environ.get("PLANNER_CACHE_DIR"):
        return Path(os.environ["PLANNER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "planner"


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-able `parts` (sorted keys), for cache file names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def cache_path(kind: str, key: str, suffix: str) -> Path:
    """`<cache>/<kind>/<key><suffix>`, its folder created."""
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


def load_npz(kind: str, key: str) -> dict[str, Any] | None:
    """Arrays of a cached `.npz` entry, or None when absent or unreadable (then the caller recomputes)."""
    import numpy as np

    path = cache_dir() / kind / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError):
        return None


def save_npz(kind: str, key: str, arrays: dict[str, Any], compressed: bool = False) -> Path:
    """Write a cache entry atomically (a temporary file in the same folder, then a rename)."""
    import numpy as np

    path = cache_path(kind, key, ".npz")
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    os.replace(tmp, path)
    return path
