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


def batch(encoded: Sequence[tuple[list[int], list[bool]]], pad: int,
          length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask) tensors (pads are never targets), to the longest example or to `length` tokens."""
    n = max([len(i) for i, _ in encoded] + [int(length or 0)])
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


def held_out_batches(data: dict[str, Any], seq_len: int, vocab: int, pad: int, per_task: int | None = None,
                     size: int = 32) -> tuple[tuple[torch.Tensor, torch.Tensor, tuple[str, ...]], ...]:
    """The held-out examples encoded and batched ((ids, mask, tasks) per `size` examples); cached per arguments."""
    key = (tuple(data["tasks"]), int(data["seed"]), int(per_task or data["test_per_task"]), seq_len, vocab, pad, size)
    if key not in _HELD_OUT:
        tok = tokenizer()
        ex = test_examples(data, per_task)
        enc = [encode(tok, e.prompt, e.answer, seq_len, vocab) for e in ex]
        out = []
        for i in range(0, len(enc), size):
            ids, mask = batch(enc[i: i + size], pad)
            out.append((ids, mask, tuple(e.task for e in ex[i: i + size])))
        _HELD_OUT[key] = tuple(out)
    return _HELD_OUT[key]


_HELD_OUT: dict[tuple[Any, ...], tuple[tuple[torch.Tensor, torch.Tensor, tuple[str, ...]], ...]] = {}


def answer_accuracy(decoder: Any, batches: Sequence[tuple[torch.Tensor, torch.Tensor, Any]]) -> dict[str, float]:
    """Teacher-forced held-out scores of a causal LM (`decoder.model` the transformer, `decoder.lm_head` the head):
    `exact_match` (every answer token is the argmax), `token_accuracy` (share of answer tokens that are) and
    `answer_loss_nats` (mean cross-entropy per answer token). The head runs on the answer positions only."""
    decoder.eval()
    right = tokens = exact = n = 0
    loss = 0.0
    with torch.no_grad():
        for ids, mask, _ in batches:
            hidden = decoder.model(input_ids=ids).last_hidden_state[:, :-1]
            target = mask[:, 1:]
            logits = decoder.lm_head(hidden[target]).float()          # (answer tokens, vocab)
            truth = ids[:, 1:][target]
            hit = torch.zeros_like(target)
            hit[target] = logits.argmax(-1) == truth
            right += int(hit.sum())
            tokens += int(target.sum())
            exact += int((hit | ~target).all(dim=1).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, truth, reduction="sum"))
            n += ids.shape[0]
    return {"exact_match": exact / max(n, 1), "token_accuracy": right / max(tokens, 1),
            "answer_loss_nats": loss / max(tokens, 1)}
