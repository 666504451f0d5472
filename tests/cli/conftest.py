"""Shared inputs of the CLI tests: one tiny moe-offload plan and its artifact, and the corpus folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.corpus_fixtures import build


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(plan file, artifact directory) of the tiny Mixtral on the emulated link (synthetic trace)."""
    from planner.api import emit_artifact, plan_from_argv
    from planner.serde import save

    d = tmp_path_factory.mktemp("tiny")
    ctx = plan_from_argv(["mixtral-8x7b", "--tiny", "--hardware", "cpu_emulated_link", "--expert-budget", "40%",
                          "--trace-tokens", "256", "--sim-tokens", "64"])
    plan_path = save(ctx.plan, d / "tiny.json")
    return plan_path, emit_artifact(ctx.plan, d / "build")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: tuple[Path, Path]) -> Path:
    """The folder every bad-input case runs in (built once; cases must leave it unchanged)."""
    plan_path, artifact = tiny_artifact
    return build(tmp_path_factory.mktemp("corpus"), plan_path, artifact)
