"""A next-token corpus split non-IID by source, from text that ships with Python itself.

The text is the docstrings of the Python standard library's own source files (read with `ast`, nothing
imported or downloaded), grouped by origin: each source is a set of stdlib packages on one subject
(`email`, `asyncio`, `xml`, ...). Natural English with a distinct vocabulary per source, so a split with one
source per client is clearly non-IID. The text depends on the Python version (3.11.x here); `corpus_info`
records it. The forgetting probe (testbeds/probe.py) uses other stdlib modules, so its text stays held out.
"""
from __future__ import annotations

import ast
import random
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.errors import PlannerError, closest_names

# source name -> stdlib packages/modules (paths relative to the stdlib folder)
SOURCES: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "asyncio": ("asyncio",),
    "xml": ("xml", "html"),
    "http": ("http", "urllib", "wsgiref", "xmlrpc"),
    "concurrency": ("concurrent", "multiprocessing", "threading.py", "queue.py", "sched.py"),
    "importlib": ("importlib", "pkgutil.py", "zipimport.py", "modulefinder.py", "runpy.py"),
    "text": ("string.py", "re", "difflib.py", "textwrap.py", "gettext.py", "locale.py", "codecs.py"),
    "numbers": ("decimal.py", "_pydecimal.py", "fractions.py", "statistics.py", "random.py", "numbers.py", "cmath.py"),
    "files": ("pathlib.py", "shutil.py", "tempfile.py", "zipfile.py", "tarfile.py", "glob.py", "fnmatch.py", "filecmp.py"),
    "data": ("csv.py", "configparser.py", "pickle.py", "shelve.py", "plistlib.py", "dbm", "sqlite3"),
    "debugging": ("pdb.py", "bdb.py", "traceback.py", "inspect.py", "dis.py", "trace.py", "cProfile.py", "profile.py", "pstats.py"),
    "unittest": ("unittest", "doctest.py"),
}


def stdlib_dir() -> Path:
    """The running Python's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(entry: str) -> list[Path]:
    """The .py files of one stdlib entry (a package folder without its tests, or one module)."""
    p = stdlib_dir() / entry
    if p.is_dir():
        return sorted(f for f in p.rglob("*.py") if "test" not in f.relative_to(stdlib_dir()).parts[1:])
    return [p] if p.is_file() else []


def docstrings_of(path: Path) -> list[str]:
    """Docstrings of a source file (module, classes, functions) of at least 80 characters, without doctests."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 80 and ">>>" not in doc:
                out.append(" ".join(doc.split()))
    return out


@lru_cache(maxsize=None)
def source_texts(source: str) -> tuple[str, ...]:
    """The docstrings of one source, in file order (deterministic for a given Python)."""
    if source not in SOURCES:
        raise PlannerError(f"unknown corpus source '{source}'", closest_names(source, SOURCES) + f"; the sources are {', '.join(SOURCES)}")
    return tuple(d for entry in SOURCES[source] for f in stdlib_files(entry) for d in docstrings_of(f))


def corpus_info() -> dict[str, Any]:
    """What the corpus was built from (for reports)."""
    return {"python": sys.version.split()[0], "stdlib": str(stdlib_dir()),
            "documents": {s: len(source_texts(s)) for s in SOURCES}}


def token_blocks(tokenizer: Any, source: str, seq_len: int, held_out: float = 0.1) -> tuple[list[list[int]], list[list[int]]]:
    """(train, test) blocks of `seq_len` tokens of one source: documents joined by EOS, cut into blocks; the
    last `held_out` fraction of the documents (in a seeded order) is the test part."""
    docs = list(source_texts(source))
    random.Random(f"corpus:{source}").shuffle(docs)
    cut = max(1, int(round(len(docs) * (1 - held_out))))
    eos = tokenizer.eos_token_id

    def blocks(texts: list[str]) -> list[list[int]]:
        ids: list[int] = []
        for t in texts:
            ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"] + [eos])
        return [ids[i: i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]

    return blocks(docs[:cut]), blocks(docs[cut:])


def client_corpus(tokenizer: Any, clients: int, seq_len: int = 128, seed: int = 0,
                  sources: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Per-client training blocks, one source per client (round-robin over a seeded order of the sources when
    there are more clients than sources: clients sharing a source get disjoint halves), plus each source's
    held-out blocks. Returns {"clients": [[block, ...], ...], "client_source": [...], "test": {source: blocks}}."""
    names = list(sources or SOURCES)
    for s in names:
        if s not in SOURCES:
            raise PlannerError(f"unknown corpus source '{s}'", closest_names(s, SOURCES))
    if clients < 1:
        raise PlannerError(f"{clients} clients", "use at least 1 client")
    random.Random(f"corpus-order:{seed}").shuffle(names)
    assign = [names[c % len(names)] for c in range(clients)]
    data = {s: token_blocks(tokenizer, s, seq_len) for s in set(assign)}
    out: list[list[list[int]]] = []
    for c, s in enumerate(assign):
        sharing = [k for k, t in enumerate(assign) if t == s]
        train = data[s][0]
        part = sharing.index(c)
        out.append(train[part::len(sharing)])
    return {"clients": out, "client_source": assign, "test": {s: data[s][1] for s in sorted(set(assign))}}
