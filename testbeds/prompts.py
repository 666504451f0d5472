"""Prompt records shared by every generator, their exact-match scorers, JSONL files, and greedy answering.

A `Prompt` is one chat request: the user text, an optional answer prefix that opens the assistant turn
(RULER's convention: "The special magic number for X ... is"), the reference answers and the scorer name.
Scorers (all exact matches on normalised strings, score in [0, 1]):
  contains_all   fraction of the reference answers that occur in the output (RULER's string_match_all)
  contains_any   1 if any reference answer occurs in the output (accepted alternatives), else 0
  number         1 if the first number in the output equals the single reference, else 0
  exact          1 if the output's first line (trimmed, trailing period dropped) equals a reference, else 0

A user's own prompts: one JSON object per line, `{"prompt": str, "answers": [str, ...], "task": str,
"id": str, "scorer": str, "answer_prefix": str, "max_new_tokens": int}`; only `prompt` is required.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from core.errors import PlannerError, reason_of

SCORERS = ("contains_all", "contains_any", "number", "exact")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Prompt:
    """One chat request with its reference answers."""

    id: str
    task: str
    prompt: str
    answers: tuple[str, ...] = ()
    scorer: str = "contains_all"
    answer_prefix: str = ""
    max_new_tokens: int = 32
    suite: str = "user"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        """One JSONL line (sorted keys)."""
        d = asdict(self)
        d["answers"] = list(self.answers)
        return json.dumps(d, sort_keys=True)


def score(prompt: Prompt, output: str) -> float:
    """The prompt's exact-match score of a model output, in [0, 1]."""
    refs = [a.strip() for a in prompt.answers]
    if not refs:
        raise PlannerError(f"prompt {prompt.id} has no reference answers", "add \"answers\" to score it")
    if prompt.scorer == "contains_all":
        low = output.lower()
        return sum(1 for r in refs if r.lower() in low) / len(refs)
    if prompt.scorer == "contains_any":
        low = output.lower()
        return float(any(r.lower() in low for r in refs))
    if prompt.scorer == "number":
        m = _NUMBER.search(output.replace(",", ""))
        return float(m is not None and float(m.group()) == float(refs[0]))
    if prompt.scorer == "exact":
        lines = output.strip().splitlines()
        first = lines[0].strip().rstrip(".").strip() if lines else ""
        return float(any(first == r.rstrip(".") for r in refs))
    raise PlannerError(f"prompt {prompt.id} names the unknown scorer '{prompt.scorer}'", f"use one of {', '.join(SCORERS)}")


def chat_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of the prompt in the model's chat template, the assistant turn opened (and its prefix)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.prompt}], tokenize=False,
                                         add_generation_prompt=True)
    if prompt.answer_prefix:
        text += prompt.answer_prefix
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer(model: Any, tokenizer: Any, prompt: Prompt, max_new_tokens: int | None = None, **generate_kwargs: Any) -> str:
    """Greedy answer of `model` to `prompt` (the text after the answer prefix, special tokens dropped)."""
    import torch

    ids = torch.tensor([chat_ids(tokenizer, prompt)])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens or prompt.max_new_tokens,
                             pad_token_id=tokenizer.eos_token_id, **generate_kwargs)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# ---------------------------------------------------------------- JSONL
def write_jsonl(path: str | Path, prompts: Iterable[Prompt]) -> Path:
    """Write prompts as JSONL (atomically)."""
    from core.atomic_io import write_text_atomic

    return write_text_atomic(path, "".join(p.to_json() + "\n" for p in prompts))


def read_jsonl(path: str | Path, flag: str = "--workload") -> list[Prompt]:
    """A user's prompt file; a malformed line raises PlannerError naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise PlannerError(f"{flag} {p}: the prompt file does not exist", "check the path (one JSON object per line)")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlannerError(f"{flag} {p}: cannot read it ({reason_of(exc)})", "pass a UTF-8 JSONL file") from exc
    out: list[Prompt] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        out.append(_prompt_from_line(line, f"{flag} {p} line {n}", len(out)))
    if not out:
        raise PlannerError(f"{flag} {p} holds no prompts", "write one JSON object per line with at least a \"prompt\"")
    return out


def _prompt_from_line(line: str, where: str, index: int) -> Prompt:
    fix = 'write e.g. {"prompt": "...", "answers": ["..."]} on that line'
    try:
        d = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PlannerError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno})", fix) from None
    if not isinstance(d, dict):
        raise PlannerError(f"{where} is a JSON {type(d).__name__}, not an object", fix)
    allowed = {"prompt", "answers", "task", "id", "scorer", "answer_prefix", "max_new_tokens", "suite", "meta"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise PlannerError(f"{where} has unknown key(s) {', '.join(unknown)}", f"use only {', '.join(sorted(allowed))}")
    if not isinstance(d.get("prompt"), str) or not d["prompt"].strip():
        raise PlannerError(f"{where} has no \"prompt\" string", fix)
    answers = d.get("answers", [])
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, (str, int, float)) for a in answers):
        raise PlannerError(f"{where}: \"answers\" is not a list of strings", fix)
    scorer = d.get("scorer", "contains_all")
    if scorer not in SCORERS:
        raise PlannerError(f"{where}: unknown scorer '{scorer}'", f"use one of {', '.join(SCORERS)}")
    mnt = d.get("max_new_tokens", 32)
    if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt < 1:
        raise PlannerError(f"{where}: max_new_tokens {mnt!r} is not a positive whole number", "e.g. 32")
    return Prompt(id=str(d.get("id", f"user-{index}")), task=str(d.get("task", "user")), prompt=d["prompt"],
                  answers=tuple(str(a) for a in answers), scorer=scorer, answer_prefix=str(d.get("answer_prefix", "")),
                  max_new_tokens=mnt, suite=str(d.get("suite", "user")),
                  meta=d.get("meta") if isinstance(d.get("meta"), dict) else {})


def accuracy_by_task(prompts: Sequence[Prompt], scores: Sequence[float]) -> dict[str, float]:
    """Mean score per task (sorted by task name)."""
    acc: dict[str, list[float]] = {}
    for p, s in zip(prompts, scores):
        acc.setdefault(p.task, []).append(s)
    return {t: sum(v) / len(v) for t, v in sorted(acc.items())}
