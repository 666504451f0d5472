"""Task generators and the workload grammar: determinism, lengths, oracles for the answers, bad input."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.errors import PlannerError, UnknownNameError
from testbeds import arithmetic, corpus, instruct, ruler
from testbeds.prompts import Prompt, chat_ids, read_jsonl, score, write_jsonl
from testbeds.specs import build_workload, parse_data, parse_workload


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


def test_ruler_prompts_are_deterministic_sized_and_hold_their_answers(tok) -> None:
    prompts = build_workload("ruler:all@512:12", tok, seed=3)
    assert prompts == build_workload("ruler:all@512:12", tok, seed=3)
    assert [p.task for p in prompts[:6]] == list(ruler.TASKS)                 # round-robin over the tasks
    assert build_workload("ruler:niah@512:1", tok, seed=4)[0].prompt != build_workload("ruler:niah@512:1", tok, seed=3)[0].prompt
    for p in prompts:
        n = len(chat_ids(tok, p))
        assert 0.95 * 512 <= n <= 1.02 * 512, (p.task, n)
        assert score(p, " ".join(p.answers)) == 1.0 and score(p, "I do not know") == 0.0
        for a in p.answers:
            assert a in p.prompt or p.task == "vt"


def test_ruler_oracles(tok) -> None:
    kv = ruler.generate("kv", 512, 2, tok, seed=1)
    for p in kv:
        table = json.loads(p.prompt[p.prompt.index("{"): p.prompt.index("}") + 1])
        key = re.search(r'Key: "([^"]+)"', p.prompt).group(1)
        assert table[key] == p.answers[0]
    for p in ruler.generate("cwe", 1024, 2, tok, seed=1):
        words = re.findall(r"\d+\. ([a-z]+)", p.prompt)
        top = [w for w, _ in Counter(words).most_common(5)]
        assert sorted(top) == sorted(p.answers)
        assert Counter(words).most_common(6)[-1][1] < Counter(words).most_common(5)[-1][1]   # no tie at rank 5
    for p in ruler.generate("vt", 512, 2, tok, seed=1):
        value = p.meta["value"]
        names = p.answers
        pos = [p.prompt.index(f"VAR {names[0]} = {value}.")] + [p.prompt.index(f"VAR {names[i]} = VAR {names[i - 1]}.") for i in range(1, 5)]
        assert pos == sorted(pos)                                            # every hop after the one it reads
    mk = ruler.generate("niah_mk", 512, 1, tok, seed=1)[0]
    assert mk.prompt.count("One of the special magic numbers for") == 4


def test_arithmetic_answers_follow_the_story() -> None:
    for p in arithmetic.generate("word3", 20, seed=2):
        sents = p.prompt.split(". ")
        total = int(re.search(r"has (\d+)", sents[0]).group(1))
        for s in sents[1:-1] + [p.prompt.rsplit(". ", 1)[-1]]:
            k = re.findall(r"\d+", s)
            if "more" in s or "gives " + p.prompt.split()[0] in s or "A friend gives" in s:
                total += int(k[0])
            elif "away" in s or "loses" in s:
                total -= int(k[0])
            elif "times as large" in s:
                total *= int(k[0])
        assert str(total) == p.answers[0] and total >= 0
    assert score(arithmetic.generate("word1", 1)[0], " 7 apples") in (0.0, 1.0)


def test_instruct_held_out_and_non_iid_split() -> None:
    test = instruct.held_out(20, seed=0)
    train = {e.prompt for c in instruct.client_split(8, 600, alpha=0.1, seed=0) for e in c}
    assert not train & {e.prompt for e in test}
    checks = {"reverse": lambda e: e.answer[::-1] in e.prompt, "upper": lambda e: e.answer.lower() in e.prompt,
              "sort": lambda e: e.answer.split(", ") == sorted(e.answer.split(", "), key=int),
              "format": lambda e: json.loads(e.answer)["name"] in e.prompt,
              "arith": lambda e: str(eval(e.prompt[8:-1])) == e.answer,
              "recall": lambda e: f"={e.answer}" in e.prompt}
    assert all(checks[e.task](e) for e in test)
    split = instruct.client_split(8, 600, alpha=0.1, size_alpha=1.0, seed=0)
    assert split == instruct.client_split(8, 600, alpha=0.1, size_alpha=1.0, seed=0)
    sizes = [len(c) for c in split]
    assert sum(sizes) <= 600 and min(sizes) >= 4 and max(sizes) > 2 * min(sizes)      # skewed sizes
    mix = np.array([[sum(e.task == t for e in c) / len(c) for t in instruct.TASKS] for c in split])
    assert (mix.max(axis=1) > 0.5).mean() >= 0.5                                    # most clients dominated by one task
    iid = instruct.client_split(8, 600, alpha=100.0, size_alpha=100.0, seed=0)
    mix_iid = np.array([[sum(e.task == t for e in c) / len(c) for t in instruct.TASKS] for c in iid])
    assert mix_iid.max() < mix.max()


def test_corpus_is_split_by_source_and_holds_out_text(tok) -> None:
    data = corpus.client_corpus(tok, clients=4, seq_len=64, sources=("email", "xml"))
    assert sorted(set(data["client_source"])) == ["email", "xml"]
    a, b = [c for c, s in enumerate(data["client_source"]) if s == "email"]
    assert not {tuple(x) for x in data["clients"][a]} & {tuple(x) for x in data["clients"][b]}
    assert all(len(x) == 64 for c in data["clients"] for x in c)
    train = {tuple(x) for c in data["clients"] for x in c}
    assert not train & {tuple(x) for x in data["test"]["email"]}


def test_jsonl_round_trip_and_user_file(tmp_path: Path, tok) -> None:
    prompts = build_workload("arith:word1,word2:4", tok)
    path = write_jsonl(tmp_path / "w.jsonl", prompts)
    assert read_jsonl(path) == prompts
    assert build_workload(str(path), tok) == prompts
    (tmp_path / "mine.jsonl").write_text('{"prompt": "Say hi", "answers": ["hi"]}\n\n{"prompt": "2+2?"}\n')
    mine = build_workload(str(tmp_path / "mine.jsonl"), tok)
    assert [p.prompt for p in mine] == ["Say hi", "2+2?"] and mine[0].answers == ("hi",)


@pytest.mark.parametrize("text, match", [
    ("ruler:niah,kvv@2k:8", "(?i)unknown ruler task 'kvv'.*did you mean kv"),
    ("rulr:niah@2k:8", "unknown suite 'rulr'"),
    ("ruler:niah:8", "has no length"),
    ("ruler:niah@2x:8", "is not a workload"),
    ("arith:word1@2k:8", "take no @LENGTH"),
    ("ruler:niah,niah@1k:2", "names a task twice"),
    ("ruler:niah@1k:0", "asks for 0 prompts"),
    ("missing/file.jsonl", "does not exist"),
])
def test_bad_workloads(text: str, match: str) -> None:
    with pytest.raises(PlannerError, match=match) as err:
        parse_workload(text)
    assert "\n" not in err.value.one_line()


def test_beyond_context_and_malformed_lines(tmp_path: Path, tok) -> None:
    with pytest.raises(PlannerError, match="do not fit the model's 8192-token context"):
        build_workload("ruler:niah@8k:1", tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "broken"\n')
    with pytest.raises(PlannerError, match=r"line 2 is not valid JSON"):
        build_workload(str(bad), tok)
    bad.write_text('{"prompt": "ok", "answer": "x"}\n')
    with pytest.raises(PlannerError, match=r"line 1 has unknown key\(s\) answer"):
        build_workload(str(bad), tok)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "word " * 9000}) + "\n")
    with pytest.raises(PlannerError, match="prompt 1 .* beyond the model's 8192-token context"):
        build_workload(str(long), tok)


def test_data_and_graph_specs_and_flags() -> None:
    from planner.flags import Flag, parse_value

    d = parse_data("instruct:clients=10,alpha=0.3")
    assert d.name == "instruct" and d.args["clients"] == 10 and d.args["alpha"] == 0.3 and d.args["total"] == 2000
    with pytest.raises(PlannerError, match="takes no 'alpah'"):
        parse_data("instruct:alpah=0.3")
    with pytest.raises(PlannerError, match="clients=ten is not a int"):
        parse_data("corpus:clients=ten")
    with pytest.raises(UnknownNameError, match="unknown name 'instrct'"):
        parse_data("instrct")
    w = parse_value(Flag("--workload", "workload", "prompts"), "ruler:niah,kv,vt@2k:32")
    assert (w.suite, w.tasks, w.length_tokens, w.count) == ("ruler", ("niah", "kv", "vt"), 2048, 32)
    g = parse_value(Flag("--graph", "graph", "graph"), "csbm-clients:groups=3,clients=30")
    assert g.name == "csbm-clients" and g.args["groups"] == 3
    with pytest.raises(PlannerError, match="--graph"):
        parse_value(Flag("--graph", "graph", "graph"), "csbm:homophilly=0.9")
