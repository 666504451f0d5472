"""Test-session settings: an isolated cache directory (traces, curves, trained digits CNN)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def planner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test process and CLI subprocess shares one fresh cache directory."""
    path = tmp_path_factory.mktemp("planner-cache")
    os.environ["PLANNER_CACHE_DIR"] = str(path)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return path
