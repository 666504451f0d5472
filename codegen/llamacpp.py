"""A `--target llama.cpp` plan as llama.cpp command-line flags (`planner export PLAN --to llama.cpp`).

Applies the plan's decisions, never makes them:
  * `-ngl`: 99 when every block and the output head are on the GPU, else the plan's exact count
    (llama.cpp offloads the last -ngl blocks; the output head counts as one more);
  * one `-ot REGEX=CPU` per set of blocks that keep the same tensor groups in host memory, over
    llama.cpp's GGUF names: `blk\\.(3|17)\\.(ffn_gate_exps|ffn_up_exps)\\.=CPU`. The trailing `\\.` makes
    a pattern take a tensor's weight and its bias (GPT-OSS) and nothing else: `ffn_gate_exps\\.` cannot
    match `ffn_gate_inp` or `ffn_gate_shexp`, and `blk\\.1\\.` cannot match `blk.17.`;
  * `-c`, `-np`, `-ub`, `-fa on` as planned (`-fa on|off|auto` since late August 2025: build b6343 has it;
    older builds take a bare `-fa`, which the file's comment says);
  * `--load-mode none` when the plan keeps tensors in host memory. With mmap (llama.cpp's default) the loader
    leaves host tensors in the pageable file mapping instead of the GPU backend's pinned host buffer
    (`src/llama-model-loader.cpp`, "avoid using a host buffer when using mmap"), so prompt processing copies the
    host experts at pageable-memory speed, not the link rate the plan counts, and the page cache may evict them;
    llama.cpp itself warns "tensor overrides to CPU are used with mmap enabled - consider using --load-mode none".
    `--load-mode` replaced `--no-mmap` in llama.cpp PR #20834 (July 2026); newer builds reject `--no-mmap`
    (`scripts/llamacpp_check.py` probes both), older ones need it instead, which the file's comment says.
Each `-ot` value is single-quoted, so a line pastes into a shell as it is and `grep -v '^#' FILE | xargs
llama-server -m MODEL.gguf` (xargs removes the quotes) applies the whole file. `$(grep ...)` does not remove
quotes and is not the way to use the file.
The regexes use only literal characters, `\\.`, and groups of `|` alternatives, a subset on which
llama.cpp's `std::regex_search` (ECMAScript grammar) and Python's `re.search` agree (no classes,
quantifiers, anchors or look-arounds), and they contain no `,` or `=` (llama.cpp splits -ot lists on
them) and no shell glob characters. A test applies them with Python, with Node's RegExp (ECMAScript)
and with the C++ standard library's std::regex, to every tensor name of the model.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

SAFE_PATTERN = re.compile(r"^(?:[A-Za-z0-9_]|\\\.|\((?:[A-Za-z0-9_]|\\\.)+(?:\|(?:[A-Za-z0-9_]|\\\.)+)*\))+$")


def _alternation(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "(" + "|".join(items) + ")"


def override_patterns(decisions: Mapping[str, Any]) -> list[str]:
    """The -ot regexes (without `=CPU`) that keep each GPU block's host groups in host memory."""
    sets: dict[tuple[str, ...], list[int]] = {}
    order = list(decisions["groups"])
    for lay in decisions["layers"]:
        if lay["host_block"] or not lay["host_groups"]:
            continue   # host blocks are in host memory through -ngl
        key = tuple(sorted(lay["host_groups"], key=order.index))
        sets.setdefault(key, []).append(int(lay["index"]))
    out = []
    for groups, blocks in sorted(sets.items(), key=lambda kv: kv[1][0]):
        out.append(r"blk\." + _alternation([str(b) for b in sorted(blocks)]) + r"\." + _alternation(list(groups)) + r"\.")
    for p in out:
        if not SAFE_PATTERN.match(p):
            raise ValueError(f"override pattern {p} leaves the regex subset both engines agree on")
    return out


def n_gpu_layers_flag(decisions: Mapping[str, Any]) -> int:
    """-ngl value: 99 for 'everything' (as llama.cpp's docs write it), else the exact count."""
    n = int(decisions["n_gpu_layers"])
    full = int(decisions["n_layer"]) + 1
    return max(99, full) if n == full else n


def keeps_host_tensors(decisions: Mapping[str, Any]) -> bool:
    """Whether any block (wholly or some tensor groups) is planned in host memory (the input embedding aside)."""
    return any(lay["host_block"] or lay["host_groups"] for lay in decisions["layers"])


def flag_lines(decisions: Mapping[str, Any]) -> list[str]:
    """One flag with its value per line."""
    batch = int(decisions.get("batch", 1))
    lines = [f"-ngl {n_gpu_layers_flag(decisions)}", f"-c {int(decisions['memory']['n_ctx'])}"]
    if batch > 1:
        lines.append(f"-np {batch}")
    lines += [f"-ub {int(decisions['ubatch'])}", f"-fa {decisions.get('flash_attn', 'on')}"]
    if keeps_host_tensors(decisions):
        lines.append("--load-mode none")
    lines += [f"-ot '{p}=CPU'" for p in override_patterns(decisions)]
    return lines


def export_flags(plan: Any) -> str:
    """The export text: comments saying what was planned, then the flags."""
    d = plan.decisions
    mem = d["memory"]
    gib = float(1 << 30)
    head = [
        f"# llama.cpp flags for {plan.model.name} ({d['quant']} GGUF) on {plan.hardware.name}, from a `planner plan "
        f"--target llama.cpp` plan",
        f"# predicted decode: {plan.predicted['tpot_ms']:.2f} ms/token ({plan.predicted['tokens_per_s']:.1f} tokens/s); "
        f"VRAM: weights + KV cache {plan.predicted['vram_bytes'] / gib:.2f} GiB + compute buffer "
        f"{mem['compute_buffer_bytes'] / gib:.2f} GiB ({mem['compute_buffer_source']})",
        f"# {d['host_layers']} of {d['n_layer']} blocks wholly in host memory; host tensor groups of the other blocks "
        "via -ot (regex search over GGUF tensor names, first match wins)",
        "# use: grep -v '^#' THIS_FILE | xargs llama-server -m MODEL.gguf   (xargs removes the quotes; or paste the lines)",
        "# -fa on: llama.cpp builds from late August 2025 on (b6343 has it); older builds take a bare -fa",
    ]
    if keeps_host_tensors(d):
        head.append("# --load-mode none: host tensors go to pinned memory, not the file mapping (llama.cpp warns about "
                    "mmap with CPU overrides); builds before July 2026 (llama.cpp PR #20834) take --no-mmap instead")
    return "\n".join(head + flag_lines(d)) + "\n"
