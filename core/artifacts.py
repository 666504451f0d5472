"""Artifact directories: what `planner emit` writes and `planner run` verifies before anything loads.

An artifact is a directory with the family's files and a `manifest.json` that says who wrote it
(`written_by: planner emit`), for which family, plan and model, and the sha256 of every file. The
writer builds it under a temporary name and renames it into place (`core.output_paths.OutputDir`);
the reader refuses a directory whose files are missing, extra-checked or changed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from core.errors import ArtifactError, PlannerError, reason_of
from core.output_paths import ARTIFACT_MARK, json_with_keys

ARTIFACT_FORMAT = 2   # 2: manifest names its writer and family


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(staging: Path, family: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """Checksum every file under `staging` and write manifest.json there (`info`: model, plan objective, ...)."""
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {"format": ARTIFACT_FORMAT, "written_by": ARTIFACT_MARK, "family": family, **dict(info),
                "files": {p.relative_to(staging).as_posix(): sha256_file(p) for p in files}}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


_looks_like_plan = json_with_keys("schema_version", "family", "decisions")   # a plan file's recogniser


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an artifact directory after verifying every file it lists (sha256)."""
    if path.is_file():
        if _looks_like_plan(path):
            name = path.stem or "plan"
            raise ArtifactError(f"{path} is a plan, not an artifact directory",
                                f"emit it first: `planner emit {path} -o build/{name}`, then `planner run build/{name}`")
        raise ArtifactError(f"{path} is a file, not an artifact directory",
                            "pass the directory `planner emit PLAN -o DIR` wrote")
    if not path.is_dir():
        raise ArtifactError(f"artifact directory {path} does not exist", "create it with `planner emit plan.json -o DIR`")
    man_path = path / "manifest.json"
    if not man_path.is_file():
        raise ArtifactError(f"{path} has no manifest.json, so it is not an artifact", "create it with `planner emit`")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{man_path} is corrupted ({reason_of(exc)})", "re-run `planner emit`") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{man_path} is not an artifact manifest", "re-run `planner emit`")
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} has artifact format {manifest.get('format')}, this runtime reads {ARTIFACT_FORMAT}",
                            "re-run `planner emit` with this version")
    for rel, digest in sorted(manifest["files"].items()):
        f = path / rel
        if not f.is_file():
            raise ArtifactError(f"artifact file {rel} is missing", "re-run `planner emit` to rebuild the directory")
        if sha256_file(f) != digest:
            raise ArtifactError(f"artifact file {rel} is corrupted (sha256 mismatch)",
                                f"rebuild it with `planner emit PLAN -o {path} --force` (the changed files are lost)")
    return manifest


def read_job(artifact: Path, baseline: str | None) -> dict[str, Any]:
    """The job of one emitted configuration (`jobs/<name>.json`: the plan, or a baseline by `--baseline` name)."""
    name = baseline or "plan"
    path = artifact / "jobs" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (artifact / "jobs").glob("*.json"))
        raise PlannerError(f"{artifact} has no configuration '{name}'",
                           f"use --baseline with one of: {', '.join(k for k in known if k != 'plan')}")
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable job ({reason_of(exc)})", "re-emit the plan") from exc
    if not isinstance(job, dict):
        raise ArtifactError(f"{path} is not a readable job (not a JSON object)", "re-emit the plan")
    return job
