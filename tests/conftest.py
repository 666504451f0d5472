"""Test-session settings: an isolated cache directory (traces, curves, trained digits CNN)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.cache import cache_dir

# The cache the user's own runs use, read before the session redirects PLANNER_CACHE_DIR: the dequantised
# SmolLM2 copy (pure function of the pinned GGUF, ~1 min to build) is built there once per machine.
PERSISTENT_CACHE = cache_dir()


@pytest.fixture(scope="session", autouse=True)
def planner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test process and CLI subprocess shares one fresh cache directory."""
    path = tmp_path_factory.mktemp("planner-cache")
    os.environ["PLANNER_CACHE_DIR"] = str(path)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return path


@pytest.fixture(scope="session")
def smollm2_cache(planner_cache: Path) -> Path:
    """The dequantised SmolLM2 copy, built once per machine in the user's cache and hard-linked (or copied)
    into the session's cache, so every loader in this session (CLI runs included) finds it there."""
    import shutil

    from testbeds.smollm2 import cache_folder, ensure_cached

    source = ensure_cached(PERSISTENT_CACHE)
    target = cache_folder(planner_cache)
    if not target.exists():
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        staging.mkdir(parents=True)
        for f in source.iterdir():
            try:
                os.link(f, staging / f.name)
            except OSError:
                shutil.copy2(f, staging / f.name)
        os.rename(staging, target)
    return ensure_cached(planner_cache)


@pytest.fixture(scope="session")
def smollm2_model(smollm2_cache: Path):
    """The full 30-layer SmolLM2-135M-Instruct (real weights, fp32, eval); shared read-only by the session."""
    from testbeds.smollm2 import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_cache: Path):
    """SmolLM2's tokenizer (with its chat template)."""
    from testbeds.smollm2 import load_tokenizer

    return load_tokenizer()
