"""Errors meant for people: each names the problem and the fix in one line.

Every layer raises these (profilers, solvers, codegen and runtime included); the CLI catches
`PlannerError` at its boundary, prints `error: <problem>. <fix>.` and exits with code 2, and
`--debug` shows the traceback instead. Standard library only.
"""
from __future__ import annotations

import difflib
from typing import Iterable

EXIT_BAD_INPUT = 2
EXIT_REGRESSION = 1
EXIT_INTERRUPTED = 130


class PlannerError(Exception):
    """Base class for user-facing errors: `problem` says what is wrong, `fix` what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message printed by the CLI: problem, then fix, on a single line."""
        text = self.problem + "."
        if self.fix:
            text += " " + self.fix[0].upper() + self.fix[1:] + "."
        return " ".join(text.split())


class UnknownNameError(PlannerError):
    """A model, hardware or family name that is not in a catalog."""


class PlanFormatError(PlannerError):
    """A plan or artifact file that cannot be read: malformed JSON, wrong schema version, missing keys."""


class ModelCaptureError(PlannerError):
    """A model whose graph cannot be captured by torch.export or torch.fx."""


class InputMismatchError(PlannerError):
    """Inputs that do not fit together (a trace for another model, an artifact for another plan)."""


class InfeasibleError(PlannerError):
    """No plan meets the request; `fix` says what budget or setting would be feasible (raised by solvers)."""


class ArtifactError(PlannerError):
    """An artifact directory that cannot be run: wrong model, corrupted or missing files, too little memory."""


class OutputPathError(PlannerError):
    """An output path a command may not write: a user's file or directory, a device, a path below a file."""


class PeerError(PlannerError):
    """A remote peer that cannot be reached, times out, or speaks another artifact version."""


def closest_names(name: str, known: Iterable[str], n: int = 3) -> str:
    """Return a short 'did you mean' phrase for `name` among `known` names."""
    known = sorted(set(known))
    matches = difflib.get_close_matches(name, known, n=n, cutoff=0.4)
    if not matches:
        matches = [k for k in known if name.split("_")[0].split("-")[0] in k][:n]
    if matches:
        return "did you mean " + ", ".join(matches)
    return "known names: " + ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")


def reason_of(exc: BaseException) -> str:
    """Why a file could not be read, in words (never a Python class name such as EOFError or KeyError)."""
    import json

    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, OSError):
        return (exc.strerror or "I/O error").lower() if exc.strerror else "cannot be read"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, EOFError):
        return "the file ends early (truncated)"
    if isinstance(exc, KeyError):
        return f"the entry {exc.args[0]!r} is missing" if exc.args else "an entry is missing"
    mark = getattr(exc, "problem_mark", None)   # a YAML parser error
    if mark is not None:
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}"
    if exc.__class__.__name__ in ("BadZipFile", "BadZipfile"):
        return "not a complete zip archive"
    if isinstance(exc, (ValueError, TypeError)):
        return "its contents have the wrong form"
    return "it cannot be read"


EXIT_TERMINATED = 143   # 128 + SIGTERM, as a shell reports a process ended by `kill`


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised by the CLI's signal handler so the work unwinds exactly as on Ctrl-C (every
    `except BaseException`/`finally` cleanup runs: staging directories and temporary files are removed)."""
