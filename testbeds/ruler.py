"""Long-context retrieval tasks in the style of RULER (Hsieh et al., 2024), generated offline and seeded.

Tasks (name: what the model must do; scorer):
  niah      single needle in a haystack: the 7-digit number stored for one key; contains_all
  niah_mk   multi-key: four needles with different keys, the question names one; contains_all
  niah_mv   multi-value: four numbers stored for the same key, all must be returned; contains_all (recall)
  kv        key-value retrieval over a JSON dict of UUID -> UUID filling the context; contains_all (48 new
            tokens: a UUID takes about 25-30 of SmolLM2's tokens, and a 30-token cap cut correct answers short)
  vt        variable tracking: a chain of 4 assignments (multi-hop), return every variable holding the value;
            contains_all (recall)
  cwe       common-word extraction: the 5 words repeated most often in a long list; contains_all (recall)

Lengths are in tokens of SmolLM2's tokenizer, the chat template included (within about 1 % of the target,
never more than 2 % above). A prompt is a pure function of (task, length, seed, index).
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable

from core.errors import PlannerError, closest_names
from testbeds.filler import WORDS, fill_to_tokens, key_phrase, magic_number, n_tokens, seeded_uuid
from testbeds.prompts import Prompt, chat_ids

TASKS = ("niah", "niah_mk", "niah_mv", "kv", "vt", "cwe")
MIN_LENGTH = 256   # tokens: below this the instructions alone fill the prompt


def generate(task: str, length: int, count: int, tokenizer: Any, seed: int = 0, start: int = 0) -> list[Prompt]:
    """`count` prompts of `task`, each about `length` tokens (chat template included)."""
    if task not in TASKS:
        raise PlannerError(f"unknown RULER task '{task}'", closest_names(task, TASKS) + f"; the tasks are {', '.join(TASKS)}")
    if length < MIN_LENGTH:
        raise PlannerError(f"RULER prompts of {length} tokens are too short", f"use at least {MIN_LENGTH} tokens")
    make = _MAKERS[task]
    return [make(random.Random(f"ruler:{task}:{length}:{seed}:{i}"), length, tokenizer, f"ruler-{task}-{length}-{seed}-{i}")
            for i in range(start, start + count)]


def _haystack_prompt(rng: random.Random, length: int, tok: Any, needles: list[str], question: str, prefix: str) -> str:
    """Filler with `needles` inserted at random depths, then the question."""
    head = ("Some special magic numbers are hidden within the following text. Make sure to memorize them. "
            "I will quiz you about the numbers afterwards.\n")
    tail = f"\nWhat are all the special magic numbers mentioned in the text? {question}"
    probe = Prompt("probe", "probe", head + " ".join(needles) + tail, answer_prefix=prefix)
    filler = fill_to_tokens(tok, rng, max(0, length - len(chat_ids(tok, probe)) - 2))
    for nd in needles:
        filler.insert(rng.randint(0, len(filler)), nd)
    return head + " ".join(filler) + tail


def _niah(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    key, value = key_phrase(rng), magic_number(rng)
    q = f"What is the special magic number for {key} mentioned in the provided text?"
    prefix = f"The special magic number for {key} mentioned in the provided text is"
    text = _haystack_prompt(rng, length, tok, [f"One of the special magic numbers for {key} is: {value}."], q, prefix)
    return Prompt(pid, "niah", text, (value,), "contains_all", prefix, 12, "ruler", {"length": length})


def _niah_mk(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    keys: list[str] = []
    while len(keys) < 4:
        k = key_phrase(rng)
        if k not in keys:
            keys.append(k)
    values = [magic_number(rng) for _ in keys]
    ask = rng.randrange(4)
    q = f"What is the special magic number for {keys[ask]} mentioned in the provided text?"
    prefix = f"The special magic number for {keys[ask]} mentioned in the provided text is"
    needles = [f"One of the special magic numbers for {k} is: {v}." for k, v in zip(keys, values)]
    text = _haystack_prompt(rng, length, tok, needles, q, prefix)
    return Prompt(pid, "niah_mk", text, (values[ask],), "contains_all", prefix, 12, "ruler", {"length": length})


def _niah_mv(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    key = key_phrase(rng)
    values = [magic_number(rng) for _ in range(4)]
    q = f"What are all the special magic numbers for {key} mentioned in the provided text?"
    prefix = f"The special magic numbers for {key} mentioned in the provided text are"
    needles = [f"One of the special magic numbers for {key} is: {v}." for v in values]
    text = _haystack_prompt(rng, length, tok, needles, q, prefix)
    return Prompt(pid, "niah_mv", text, tuple(values), "contains_all", prefix, 48, "ruler", {"length": length})


def _sized(build: Callable[[int], Prompt], first: int, per_item: int, length: int, tok: Any) -> Prompt:
    """Build with `first` items, then once more with the count corrected by the measured token length."""
    p = build(first)
    gap = length - len(chat_ids(tok, p))
    if gap < 0:
        return build(max(2, first - (-gap + per_item - 1) // per_item))
    if gap > per_item:
        return build(first + gap // per_item)
    return p


def _kv(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    head = "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{"
    pair = json.dumps(seeded_uuid(random.Random(0))) + ": " + json.dumps(seeded_uuid(random.Random(1))) + ",\n"
    pair_tokens = n_tokens(tok, pair)
    probe_q = "\n}\n\nKey: \"00000000-0000-4000-8000-000000000000\"\nThe value associated with the specified key is: "
    overhead = len(chat_ids(tok, Prompt("probe", "probe", head + probe_q)))
    item_seed, pick = rng.random(), rng.random()

    def build(n_pairs: int) -> Prompt:
        r = random.Random(item_seed)
        pairs = [(seeded_uuid(r), seeded_uuid(r)) for _ in range(n_pairs)]
        k, v = pairs[int(pick * n_pairs)]
        body = ",\n".join(f"{json.dumps(a)}: {json.dumps(b)}" for a, b in pairs)
        text = f"{head}{body}\n}}\n\nKey: {json.dumps(k)}\nThe value associated with the specified key is: "
        prefix = f"The value associated with the specified key {json.dumps(k)} is"
        return Prompt(pid, "kv", text, (v,), "contains_all", prefix, 48, "ruler", {"length": length, "pairs": n_pairs})

    return _sized(build, max(2, (length - overhead - 2) // pair_tokens), pair_tokens, length, tok)


def _var_name(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))


def _vt(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    names: list[str] = []
    while len(names) < 5:
        n = _var_name(rng)
        if n not in names:
            names.append(n)
    value = str(rng.randint(10000, 99999))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, 5)]
    head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    q = f"\nQuestion: Find all variables that are assigned the value {value} in the text above."
    prefix = (" Answer: According to the chain(s) of variable assignment in the text above, 5 variables are "
              f"assigned the value {value}, they are:")
    budget = length - len(chat_ids(tok, Prompt("probe", "probe", head + " ".join(chain) + q, answer_prefix=prefix))) - 2
    filler = fill_to_tokens(tok, rng, max(0, budget))
    # assignments in order, at increasing random depths (a later hop never precedes an earlier one)
    spots = sorted(rng.randint(0, len(filler)) for _ in chain)
    for offset, (spot, stmt) in enumerate(zip(spots, chain)):
        filler.insert(spot + offset, stmt)
    return Prompt(pid, "vt", head + " ".join(filler) + q, tuple(names), "contains_all", prefix, 30, "ruler",
                  {"length": length, "value": value})


def _cwe(rng: random.Random, length: int, tok: Any, pid: str) -> Prompt:
    vocab = list(WORDS)
    rng.shuffle(vocab)
    common, rare = vocab[:5], vocab[5:]
    head = ("Below is a numbered list of words. In these words, some appear more often than others. "
            "Memorize the ones that appear most often.\n")
    q = "\nQuestion: What are the 5 most common words in the above list?"
    prefix = " Answer: The top 5 words that appear most often in the list are:"
    overhead = len(chat_ids(tok, Prompt("probe", "probe", head + q, answer_prefix=prefix)))
    per_word = n_tokens(tok, " 100. lantern")
    item_seed = rng.random()

    def build(n_words: int) -> Prompt:
        r = random.Random(item_seed)
        n_common = max(3, n_words // 12)          # each common word: ~1/12 of the list; rare words ~1-3 times
        words = [w for w in common for _ in range(n_common)]
        while len(words) < n_words:
            words.append(r.choice(rare))
        r.shuffle(words)
        text = head + " ".join(f"{i + 1}. {w}" for i, w in enumerate(words)) + q
        return Prompt(pid, "cwe", text, tuple(common), "contains_all", prefix, 40, "ruler", {"length": length})

    return _sized(build, max(30, (length - overhead - 2) // per_word), per_word, length, tok)


_MAKERS: dict[str, Callable[[random.Random, int, Any, str], Prompt]] = {
    "niah": _niah, "niah_mk": _niah_mk, "niah_mv": _niah_mv, "kv": _kv, "vt": _vt, "cwe": _cwe}
