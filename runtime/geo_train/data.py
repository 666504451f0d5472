"""Token streams per region. Until the shared corpus test bed lands: a synthetic next-token source per
region (labelled), each region its own sparse bigram chain, so the split is non-IID by source."""
from __future__ import annotations

import torch


class BigramSource:
    """A seeded sparse bigram chain over `vocab` tokens (one per source)."""

    def __init__(self, vocab: int, source: int, seed: int, branching: int = 4) -> None:
        g = torch.Generator().manual_seed(1_000_003 * (source + 1) + seed)
        self.vocab = vocab
        self.next_tokens = torch.randint(0, vocab, (vocab, branching), generator=g)
        w = torch.rand(vocab, branching, generator=g) ** 2 + 0.05
        self.probs = w / w.sum(dim=1, keepdim=True)

    def sample(self, batch: int, seq_len: int, g: torch.Generator) -> torch.Tensor:
        """(batch, seq_len) int64 token ids."""
        out = torch.empty(batch, seq_len, dtype=torch.long)
        tok = torch.randint(0, self.vocab, (batch,), generator=g)
        for t in range(seq_len):
            out[:, t] = tok
            pick = torch.multinomial(self.probs[tok], 1, generator=g).squeeze(1)
            tok = self.next_tokens[tok, pick]
        return out


class RegionStream:
    """The training batches of one region: its own sources (region r holds source r % sources)."""

    def __init__(self, vocab: int, region: int, sources: int, seed: int, batch: int, seq_len: int) -> None:
        self.src = BigramSource(vocab, region % sources, seed)
        self.g = torch.Generator().manual_seed(seed * 7919 + region)
        self.batch, self.seq_len = batch, seq_len

    def next(self) -> torch.Tensor:
        return self.src.sample(self.batch, self.seq_len, self.g)


def held_out(vocab: int, sources: int, seed: int, batch: int, seq_len: int) -> torch.Tensor:
    """Held-out tokens, the same number from every source (a separate generator from training)."""
    g = torch.Generator().manual_seed(seed * 104729 + 17)
    return torch.cat([BigramSource(vocab, s, seed).sample(batch, seq_len, g) for s in range(sources)])


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocab 256, matching lm-small); EOS is byte 0, which docstrings never hold."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode("utf-8"))}


class CorpusStream:
    """Training batches of one region from the shared corpus test bed (testbeds/corpus.py): one stdlib
    docstring source per region (non-IID by source), byte tokens, blocks drawn with a seeded generator."""

    def __init__(self, region: int, regions: int, seed: int, batch: int, seq_len: int) -> None:
        from testbeds.corpus import client_corpus

        data = client_corpus(ByteTokenizer(), regions, seq_len=seq_len, seed=seed)
        self.blocks = torch.tensor(data["clients"][region], dtype=torch.long)
        self.source = data["client_source"][region]
        self.g = torch.Generator().manual_seed(seed * 7919 + region)
        self.batch = batch

    def next(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.blocks), (self.batch,), generator=self.g)
        return self.blocks[idx]


def corpus_held_out(regions: int, seed: int, per_source: int, seq_len: int) -> torch.Tensor:
    """The held-out blocks of every region's source, the same number from each (the first `per_source`)."""
    from testbeds.corpus import client_corpus

    data = client_corpus(ByteTokenizer(), regions, seq_len=seq_len, seed=seed)
    return torch.cat([torch.tensor(data["test"][s][:per_source], dtype=torch.long) for s in sorted(data["test"])])
