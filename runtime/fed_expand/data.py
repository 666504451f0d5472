"""Instruction data as token batches: ChatML prompt, answer tokens marked for the loss and the metrics.

`encode(tokenizer, example, seq_len, vocab)` -> (ids, mask): the user turn and the assistant header, then the
answer and `<|im_end|>`; `mask` marks the answer tokens (the loss and the exact-match score look only there).
Examples longer than `seq_len` lose prompt tokens from the left. A tiny model's smaller vocabulary gets the
ids folded into it (ids mod vocab): the text is meaningless to it, the code path is the real one.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import torch

USER = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
END = "<|im_end|>"


@functools.lru_cache(maxsize=1)
def tokenizer() -> Any:
    """SmolLM2's tokenizer (test-bed cache)."""
    from testbeds.smollm2 import load_tokenizer

    return load_tokenizer()


def encode(tok: Any, prompt: str, answer: str, seq_len: int, vocab: int) -> tuple[list[int], list[bool]]:
    """Token ids of one example and the answer mask."""
    p = tok(USER.format(prompt=prompt), add_special_tokens=False)["input_ids"]
    a = tok(answer + END, add_special_tokens=False)["input_ids"]
    keep = max(1, seq_len - len(a))
    p = p[-keep:]
    ids = [int(i) % vocab for i in (p + a)][-seq_len:]
    mask = ([False] * len(p) + [True] * len(a))[-seq_len:]
    return ids, mask


def batch(encoded: Sequence[tuple[list[int], list[bool]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask) tensors (pads are never targets)."""
    n = max(len(i) for i, _ in encoded)
    ids = torch.full((len(encoded), n), pad, dtype=torch.long)
    mask = torch.zeros(len(encoded), n, dtype=torch.bool)
    for r, (i, m) in enumerate(encoded):
        ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(m)] = torch.tensor(m)
    return ids, mask


def client_examples(data: dict[str, Any], clients: int, index: int) -> list[Any]:
    """Client `index`'s share of the plan's instruction split (testbeds.instruct.client_split)."""
    from testbeds.instruct import client_split

    return _split(tuple(data["tasks"]), clients, int(data["total"]), float(data["alpha"]), float(data["size_alpha"]),
                  int(data["seed"]))[index]


@functools.lru_cache(maxsize=4)
def _split(tasks: tuple[str, ...], clients: int, total: int, alpha: float, size_alpha: float, seed: int) -> list[Any]:
    from testbeds.instruct import client_split

    return client_split(clients, total, alpha, size_alpha, seed, tasks)


def test_examples(data: dict[str, Any], per_task: int | None = None) -> list[Any]:
    """Held-out examples (disjoint from every training split by construction)."""
    from testbeds.instruct import held_out

    return held_out(int(per_task or data["test_per_task"]), int(data["seed"]), tuple(data["tasks"]))
