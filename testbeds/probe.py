"""A general-ability probe that shows forgetting: held-out text loss and answers the base model gets right.

Two numbers, both on data no fine-tuning set here contains:
  text_loss_nats   mean next-token cross-entropy (nats/token) on held-out natural text: docstrings of stdlib
                   modules that the corpus (testbeds/corpus.py) does not use
  answer_accuracy  exact-match accuracy on short general questions (capitals, everyday facts) that the base
                   SmolLM2-135M-Instruct answers correctly (chosen by running it: see QUESTIONS)
A fine-tuned model that forgot shows a higher loss and a lower accuracy than the base model.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from testbeds.corpus import docstrings_of, stdlib_files
from testbeds.prompts import Prompt, answer, score

# stdlib modules disjoint from corpus.SOURCES
TEXT_MODULES = ("argparse.py", "logging", "json", "collections", "functools.py", "dataclasses.py", "enum.py",
                "heapq.py", "bisect.py", "calendar.py", "datetime.py", "contextlib.py")

# (question, accepted answers): every one answered correctly by the base model, greedy, in this prompt form
QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("What is the capital of England?", ("London",)),
    ("What is the capital of Russia?", ("Moscow",)),
    ("What is the capital of Egypt?", ("Cairo",)),
    ("What is the capital of China?", ("Beijing",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many days are in a week?", ("seven", "7")),
    ("What is the chemical symbol for water?", ("H2O",)),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("What is the opposite of hot?", ("cold",)),
)
# Candidates the base model got wrong (greedy, 24 tokens) and so are not in the probe: the capitals of Italy and
# Spain, the colour of grass, a spider's legs, the largest planet, what bees make, the king of the jungle, the
# freezing point of water (answered "-18").


def questions() -> list[Prompt]:
    """The probe's questions as prompts (scored: any accepted answer appears in the output)."""
    return [Prompt(f"probe-q{i}", "probe_qa", q, a, "contains_any", "", 24, "probe") for i, (q, a) in enumerate(QUESTIONS)]


def probe_texts(max_docs: int = 40) -> list[str]:
    """Held-out natural text: the first `max_docs` long docstrings of TEXT_MODULES, in a fixed order."""
    docs = [d for entry in TEXT_MODULES for f in stdlib_files(entry) for d in docstrings_of(f)]
    return docs[:max_docs]


def text_loss(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int = 256) -> float:
    """Mean next-token cross-entropy in nats per predicted token over `texts` (each cut to `max_tokens`)."""
    import torch

    total, n = 0.0, 0
    model.eval()
    with torch.no_grad():
        for t in texts:
            ids = tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            logits = model(x).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            n += len(ids) - 1
    return total / n if n else math.nan


def run_probe(model: Any, tokenizer: Any, max_docs: int = 20, max_questions: int | None = None) -> dict[str, float]:
    """{"text_loss_nats": ..., "answer_accuracy": ...} of `model` (greedy answers, one thread is the caller's)."""
    qs = questions()[:max_questions]
    acc = sum(score(p, answer(model, tokenizer, p)) for p in qs) / len(qs)
    return {"text_loss_nats": text_loss(model, tokenizer, probe_texts(max_docs)), "answer_accuracy": acc}
