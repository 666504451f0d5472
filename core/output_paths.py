"""What a command may overwrite: the rule every writing command follows, checked before the work.

A command may replace only what the same command wrote before (a plan file, a trace, a measured
hardware profile, a receipt, an artifact directory whose manifest and files match). Anything else at
the path is refused with a one-line error unless the user passes `--force`; even then a special
file (device, FIFO, socket), a symbolic link, or a thing of the other kind (a directory where a file
is written, a file where a directory is written) is never touched.

Usage (the CLI checks before planning, then writes through the same object):

    out = OutputFile(Path("p.json"), flag="-o", what="plan", is_previous=looks_like_plan, force=False)
    out.check()                       # raises OutputPathError before any work
    ...
    out.write_text(text)              # checks again, then writes atomically with the user's umask
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.atomic_io import write_bytes_atomic
from core.errors import OutputPathError

NAME_MAX = 255   # bytes in one path component on Linux and macOS file systems

Recognizer = Callable[[Path], bool]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def check_parent(path: Path, flag: str) -> None:
    """The path's name is not too long and no component above it is a file (or missing and uncreatable)."""
    name = path.name
    if not name or name in (".", ".."):
        raise OutputPathError(f"{flag} {path} has no file name", f"pass a path such as {flag} out/result")
    if len(os.fsencode(name)) > NAME_MAX:
        raise OutputPathError(f"{flag}: the file name is {len(os.fsencode(name))} bytes long, above the {NAME_MAX}-byte "
                              "limit of the file system", "choose a shorter name")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputPathError(f"{flag} {path} lies below {parent}, which is a file, not a directory",
                                      "choose a path inside a directory")
            if not os.access(parent, os.W_OK | os.X_OK) and parent == path.parent:
                raise OutputPathError(f"{flag}: cannot write in {parent} (permission denied)",
                                      "choose a directory you can write to")
            break


@dataclass(frozen=True)
class OutputFile:
    """A file a command writes: `what` names the kind of content (e.g. "plan"), `is_previous` recognises it."""

    path: Path
    flag: str
    what: str
    is_previous: Recognizer
    force: bool = False
    command: str = "planner"

    def check(self) -> None:
        """Raise OutputPathError if writing here could destroy something the command did not write."""
        p = self.path
        check_parent(p, self.flag)
        if p.is_symlink():
            raise OutputPathError(f"{self.flag} {p} is a symbolic link, which is never replaced",
                                  "write to the link's target path or another path")
        if not p.exists():
            return
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{self.flag} {p} is a directory", f"give a file path for the {self.what}, e.g. {p}/{self.what}.out")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{self.flag} {p} is {_kind(st.st_mode)}, which is never replaced",
                                  "choose a regular file path")
        if self.force or self.is_previous(p):
            return
        raise OutputPathError(f"{self.flag} {p} exists and is not a {self.what} written by `{self.command}`",
                              "choose another path, or pass --force to replace it")

    def write_bytes(self, data: bytes) -> Path:
        """Check again (the path may have changed during the work), then write atomically."""
        self.check()
        return write_bytes_atomic(self.path, data)

    def write_text(self, text: str) -> Path:
        """UTF-8 text, see `write_bytes`."""
        return self.write_bytes(text.encode("utf-8"))


# ------------------------------------------------------------------ recognisers
def json_with_keys(*keys: str) -> Recognizer:
    """A recogniser for JSON objects that carry all `keys` (e.g. a plan: schema_version and family)."""

    def recognise(path: Path) -> bool:
        try:
            if path.stat().st_size > 512 << 20:
                return False
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(d, dict) and all(k in d for k in keys)

    return recognise


def text_starting_with(prefix: str) -> Recognizer:
    """A recogniser for text files whose first bytes are `prefix` (e.g. a header comment)."""
    raw = prefix.encode("utf-8")

    def recognise(path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                return fh.read(len(raw)) == raw
        except OSError:
            return False

    return recognise


# ------------------------------------------------------------------ directories (artifacts)
ARTIFACT_MARK = "planner emit"


def is_previous_artifact(path: Path, sha256: Callable[[Path], str]) -> bool:
    """True for a directory whose manifest.json says `written_by: planner emit` and whose files match it exactly."""
    man = path / "manifest.json"
    try:
        d = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(d, dict) or d.get("written_by") != ARTIFACT_MARK or not isinstance(d.get("files"), dict):
        return False
    listed = set(d["files"]) | {"manifest.json"}
    for f in path.rglob("*"):
        rel = f.relative_to(path).as_posix()
        if f.is_symlink() or (not f.is_dir() and not f.is_file()):
            return False
        if f.is_file() and rel not in listed:
            return False
    for rel, digest in d["files"].items():
        f = path / rel
        if not f.is_file() or sha256(f) != digest:
            return False
    return True


@dataclass(frozen=True)
class OutputDir:
    """An artifact directory `planner emit` builds under a temporary name and renames into place."""

    path: Path
    flag: str
    sha256: Callable[[Path], str]
    force: bool = False

    def check(self) -> None:
        """Raise OutputPathError unless the path is free, a previous artifact, or (with --force) a directory."""
        p = self.path
        check_parent(p, self.flag)
        if p.is_symlink():
            raise OutputPathError(f"{self.flag} {p} is a symbolic link, which is never replaced",
                                  "pass the link's target directory or another path")
        if not p.exists():
            return
        st = p.stat()
        if not stat.S_ISDIR(st.st_mode):
            what = "a file" if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)
            raise OutputPathError(f"{self.flag} {p} is {what}, not a directory, and is never replaced",
                                  "choose a directory path")
        if self.force or is_previous_artifact(p, self.sha256) or not any(p.iterdir()):
            return
        raise OutputPathError(f"{self.flag} {p} is a directory that `planner emit` did not write (or whose files were "
                              "changed since)", "choose another path, or pass --force to replace the directory")

    def install(self, staging: Path) -> Path:
        """Move a fully written staging directory into place (checks again first); the old artifact is removed."""
        self.check()
        p = self.path
        if p.exists():
            old = p.with_name(f".{p.name[:64]}.old-{os.getpid()}")
            os.replace(p, old)
            try:
                os.replace(staging, p)
            except BaseException:
                os.replace(old, p)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, p)
        return p


def zip_with_members(*names: str) -> Recognizer:
    """A recogniser for zip archives (e.g. .npz) holding all `names`."""
    import zipfile

    def recognise(path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as z:
                have = set(z.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            return False
        return all(n in have for n in names)

    return recognise


def bytes_within_head(marker: bytes, head: int = 8192) -> Recognizer:
    """A recogniser for files whose first `head` bytes contain `marker` (e.g. b"atplotlib" in a figure)."""

    def recognise(path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                return marker in fh.read(head)
        except OSError:
            return False

    return recognise
