"""What a command may overwrite: the rule every writing command follows, checked before the work.

A command may replace only what the same command wrote before (a plan file, a trace, a measured
hardware profile, a receipt, a figure carrying planner's mark, an artifact directory whose manifest
and files match). Anything else at the path is refused with a one-line error unless the user passes
`--force`; even then a special file (device, FIFO, socket), a symbolic link, a thing of the other
kind (a directory where a file is written, a file where a directory is written, another command's
output such as a trace where a plan is written) and a file inside an emitted artifact (it belongs to
the artifact) are never touched. Whether the directory can be written is tried before the work, and
every error names the user's path, never a temporary file.

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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

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


def _probe_writable(directory: Path, path: Path, flag: str) -> None:
    """Create and remove a hidden file in `directory` (the only sure test: root passes `os.access` on
    read-only or virtual file systems such as /sys); an error names the user's path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".planner-probe.", suffix=".tmp", dir=directory)
    except OSError as exc:
        reason = exc.strerror or "not writable"
        raise OutputPathError(f"{flag} {path}: cannot write in {directory} ({reason})",
                              "choose a directory you can write to") from None
    os.close(fd)
    os.unlink(tmp)


def check_parent(path: Path, flag: str) -> None:
    """The path's name is not too long, no component above it is a file, and the nearest existing
    directory above it can be written (tried with a probe file, before any work)."""
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
            _probe_writable(parent, path, flag)
            break
    owner = artifact_containing(path)
    if owner is not None:
        raise OutputPathError(f"{flag} {path} lies inside the artifact {owner} written by `{ARTIFACT_MARK}`, "
                              "and a file inside an artifact belongs to it (even with --force)",
                              f"write outside {owner}; to change the artifact, re-emit it")


@dataclass(frozen=True)
class OutputFile:
    """A file a command writes: `what` names the kind of content (e.g. "plan"), `is_previous` recognises it;
    `others` recognise the other commands' outputs (name -> recogniser), which are never replaced."""

    path: Path
    flag: str
    what: str
    is_previous: Recognizer
    force: bool = False
    command: str = "planner"
    others: Mapping[str, Recognizer] = field(default_factory=dict)

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
        if self.is_previous(p):
            return
        for other, recognise in self.others.items():
            if recognise(p):
                raise OutputPathError(f"{self.flag} {p} is a {other}, not a {self.what}, and is never replaced "
                                      "(even with --force)", "choose another path")
        if self.force:
            return
        raise OutputPathError(f"{self.flag} {p} exists and is not a {self.what} written by `{self.command}`",
                              "choose another path, or pass --force to replace it")

    def write_bytes(self, data: bytes) -> Path:
        """Check again (the path may have changed during the work), then write atomically; an error names
        the user's path, not the temporary file."""
        self.check()
        try:
            return write_bytes_atomic(self.path, data)
        except OSError as exc:
            raise OutputPathError(f"{self.flag} {self.path}: cannot write ({exc.strerror or 'I/O error'})",
                                  "check the disk space and permissions, or choose another path") from None

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


def _is_artifact_manifest(man: Path) -> bool:
    try:
        if not man.is_file() or man.stat().st_size > 64 << 20:
            return False
        d = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(d, dict) and d.get("written_by") == ARTIFACT_MARK


def artifact_containing(path: Path) -> Path | None:
    """The emitted artifact directory some directory above `path` is (its manifest says `planner emit`), or None."""
    chain = [path.parent, *path.parent.parents]       # as the user wrote it (relative stays relative) ...
    if not path.is_absolute():
        cwd = Path(os.getcwd())
        chain += [cwd.parent, *cwd.parent.parents] if chain[-1] == Path(".") else [cwd, *cwd.parents]
    for d in chain:                                   # ... then the directories above the working directory
        if _is_artifact_manifest(d / "manifest.json"):
            return d
    return None


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


def bytes_within(marker: bytes, limit: int = 64 << 20) -> Recognizer:
    """A recogniser for files of at most `limit` bytes that contain `marker` anywhere (e.g. the mark
    `planner inspect --plot` writes into a figure's metadata, which a PDF keeps near its end)."""

    def recognise(path: Path) -> bool:
        try:
            if path.stat().st_size > limit:
                return False
            with open(path, "rb") as fh:
                return marker in fh.read(limit)
        except OSError:
            return False

    return recognise
