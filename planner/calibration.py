"""Calibration files: measure once (`planner calibrate`), plan from the file deterministically.

A calibration file is YAML written by `planner calibrate`: the family it is for, the model (name,
fingerprint, tiny or not), the machine it was measured on, and the family's measured figures. A plan
made with `--calibration FILE` reads only the file, so two plans from the same file are byte-identical,
and records the file's sha256 so `planner diff` shows when the calibration changed.
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any, Mapping

import yaml

from core.errors import InputMismatchError, PlannerError, reason_of

HEADER = "# written by `planner calibrate`; pass it to `planner plan --calibration FILE`\n"
KIND = "planner-calibration"
FORMAT = 1


def calibration_text(family: str, spec: Any, tiny: bool, measured: Mapping[str, Any]) -> str:
    """The YAML text of a calibration file."""
    doc = {"kind": KIND, "format": FORMAT, "family": family,
           "model": {"name": spec.name, "fingerprint": spec.fingerprint(tiny), "tiny": bool(tiny)},
           "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()},
           "measured": dict(measured)}
    return HEADER + yaml.safe_dump(doc, sort_keys=True, width=110)


def read_calibration(path: Path, family: str, spec: Any, tiny: bool,
                     flag: str = "--calibration") -> tuple[dict[str, Any], dict[str, str]]:
    """(measured figures, the plan's record {"sha256", "machine"}) of a calibration file for this family and model;
    `flag` names the option that gave the file in error messages."""
    if not path.is_file():
        raise PlannerError(f"{flag} {path} does not exist", "measure one with `planner calibrate MODEL -o FILE`")
    raw = path.read_bytes()
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlannerError(f"{flag} {path} is not readable YAML ({reason_of(exc)})",
                           "re-create it with `planner calibrate`") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise PlannerError(f"{flag} {path} is not a calibration file", "create one with `planner calibrate MODEL -o FILE`")
    if doc.get("format") != FORMAT:
        raise PlannerError(f"{flag} {path} has format {doc.get('format')}, this planner reads {FORMAT}",
                           "re-create it with this version of `planner calibrate`")
    if doc.get("family") != family:
        raise InputMismatchError(f"{flag} {path} was measured for {doc.get('family')}, not {family}",
                                 f"run `planner calibrate {spec.name} --scenario {family} -o FILE`")
    model = doc.get("model") or {}
    if model.get("fingerprint") != spec.fingerprint(tiny) or bool(model.get("tiny")) != bool(tiny):
        which = f"{model.get('name')}{' (tiny)' if model.get('tiny') else ''}"
        raise InputMismatchError(f"{flag} {path} was measured on {which}, not {spec.name}{' (tiny)' if tiny else ''}",
                                 f"run `planner calibrate {spec.name}{' --tiny' if tiny else ''} -o FILE`")
    measured = doc.get("measured")
    if not isinstance(measured, dict):
        raise PlannerError(f"{flag} {path} has no 'measured' section", "re-create it with `planner calibrate`")
    machine = doc.get("machine") or {}
    record = {"sha256": "sha256:" + hashlib.sha256(raw).hexdigest()[:16],
              "machine": str(machine.get("processor", "")), "source": "calibration file"}
    return measured, record
