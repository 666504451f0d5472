"""What a command may overwrite: a user's files survive byte for byte; only a command's own previous
output is replaced; --force never touches a file of the other kind or a special file; outputs follow
the umask; an interrupted emit leaves nothing behind."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from planner.cli import main
from tests.cli.corpus_fixtures import SMALL_MOE, umask

SMALL = ["plan", "small_moe.json", "--hardware", "a100_24gb", "-q"]


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small_moe.json").write_text(json.dumps(SMALL_MOE), encoding="utf-8")
    return tmp_path


def _user_dir(path: Path) -> bytes:
    path.mkdir()
    data = b"my notes, not a build\n"
    (path / "notes.txt").write_bytes(data)
    return data


def test_emit_refuses_a_users_directory_and_keeps_every_byte(work: Path, tiny_artifact: tuple[Path, Path]) -> None:
    plan_path, _ = tiny_artifact
    data = _user_dir(work / "d")
    assert main(["emit", str(plan_path), "-o", "d"]) == 2
    assert (work / "d" / "notes.txt").read_bytes() == data
    assert sorted(p.name for p in work.iterdir()) == ["d", "small_moe.json"]   # no staging folder left behind


def test_emit_replaces_its_own_artifact_but_not_a_modified_one(work: Path, tiny_artifact: tuple[Path, Path]) -> None:
    plan_path, _ = tiny_artifact
    assert main(["emit", str(plan_path), "-o", "build"]) == 0
    assert main(["emit", str(plan_path), "-o", "build"]) == 0          # a previous artifact: replaced
    (work / "build" / "extra.txt").write_text("mine\n", encoding="utf-8")
    assert main(["emit", str(plan_path), "-o", "build"]) == 2          # a file emit did not write
    assert (work / "build" / "extra.txt").read_text() == "mine\n"
    assert main(["emit", str(plan_path), "-o", "build", "--force"]) == 0   # the user said so
    assert not (work / "build" / "extra.txt").exists()


def test_force_never_touches_a_file_or_a_device(work: Path, tiny_artifact: tuple[Path, Path]) -> None:
    plan_path, _ = tiny_artifact
    (work / "f").write_bytes(b"a user's file\n")
    assert main(["emit", str(plan_path), "-o", "f", "--force"]) == 2
    assert (work / "f").read_bytes() == b"a user's file\n"
    assert main(["emit", str(plan_path), "-o", "/dev/null", "--force"]) == 2
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (work / "d").mkdir()
    assert main(SMALL + ["-o", "d", "--force"]) == 2                    # a directory where a file goes
    assert (work / "d").is_dir()


def test_plan_output_is_checked_before_the_work(work: Path) -> None:
    (work / "notes.json").write_text('{"mine": true}\n', encoding="utf-8")
    t0 = time.perf_counter()
    assert main(["plan", "mixtral-8x7b", "--hardware", "a100_24gb", "-o", "notes.json"]) == 2
    assert time.perf_counter() - t0 < 2.0                               # refused before any profiling or solving
    assert (work / "notes.json").read_text() == '{"mine": true}\n'


def test_plan_replaces_a_plan_and_writes_with_the_umask(work: Path) -> None:
    assert main(SMALL + ["-o", "p.json"]) == 0
    first = (work / "p.json").read_bytes()
    assert stat.S_IMODE(os.stat(work / "p.json").st_mode) == 0o666 & ~umask()
    assert main(SMALL + ["-o", "p.json"]) == 0                          # its own previous output
    assert (work / "p.json").read_bytes() == first                     # deterministic
    (work / "user.json").write_bytes(b"{}\n")
    assert main(SMALL + ["-o", "user.json", "--force"]) == 0           # --force replaces a regular file
    assert (work / "user.json").read_bytes() == first


def test_a_250_character_name_is_written(work: Path) -> None:
    name = "p" * 245 + ".json"
    assert main(SMALL + ["-o", name]) == 0
    assert (work / name).is_file()
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []


def test_every_writer_keeps_a_users_file(work: Path, tiny_artifact: tuple[Path, Path]) -> None:
    _, artifact = tiny_artifact
    for argv in (["trace", "mixtral-8x7b", "--preset", "bursty", "-o", "mine"],
                 ["hardware", "measure", "-o", "mine"],
                 ["run", str(artifact), "--max-new-tokens", "1", "--json", "mine"],
                 ["calibrate", "digits-cnn", "--scenario", "split-inference", "-o", "mine"]):
        (work / "mine").write_bytes(b"precious\n")
        assert main(argv) == 2, argv
        assert (work / "mine").read_bytes() == b"precious\n", argv


def test_trace_replaces_its_own_trace(work: Path) -> None:
    argv = ["trace", "mixtral-8x7b", "--preset", "bursty", "--tokens", "64", "-o", "t.npz"]
    assert main(argv) == 0
    assert main(argv) == 0


def test_an_interrupted_emit_leaves_the_old_artifact_and_no_staging(work: Path, tiny_artifact: tuple[Path, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    plan_path, artifact = tiny_artifact
    shutil.copytree(artifact, work / "build")
    before = {p.relative_to(work): p.read_bytes() for p in (work / "build").rglob("*") if p.is_file()}
    from planner.families.moe_offload import MoeOffloadFamily

    def interrupted(self, plan, values, staging, progress):  # type: ignore[no-untyped-def]
        (staging / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(MoeOffloadFamily, "emit", interrupted)
    assert main(["emit", str(plan_path), "-o", "build"]) == 130
    after = {p.relative_to(work): p.read_bytes() for p in (work / "build").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in work.iterdir()) == ["build", "small_moe.json"]
