"""The real task of the fed-lora runtime: a small transformer classifier for scikit-learn's 8x8 digits.

Each image becomes 16 patches of 2x2 pixels, projected to `hidden` and fed as `inputs_embeds` to a
`transformers.BertModel` (so its blocks, `encoder.layer.N`, and attention projections are exactly
what PEFT and the fed-lora profiler see in BERT and MiniLM); mean pooling and a linear classifier
(`classifier`, trained in full with the LoRA adapters) follow.

`pretrained_digits_transformer()` pretrains it centrally on a seeded part of the digits training
split (`PRETRAIN_FRACTION`) and caches the weights under the planner cache directory; federated
LoRA fine-tuning then starts from there on the whole training split, split non-IID over clients.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

import numpy as np
import torch
from torch import nn

from core.cache import cache_dir
from runtime.fed.data import DigitsSplit, load_digits_split

log = logging.getLogger(__name__)

ARCH_VERSION = 1
PATCH = 2
NUM_PATCHES = (8 // PATCH) ** 2
PRETRAIN_FRACTION = 0.3
DEFAULTS = {"hidden": 64, "layers": 8, "heads": 4, "intermediate": 128}


class DigitsTransformer(nn.Module):
    """Patch embedding -> BERT encoder (`encoder.encoder.layer.N`) -> mean pooling -> `classifier`."""

    trainable_head: tuple[str, ...] = ("classifier",)
    fine_tuning_seq_len = NUM_PATCHES          # tokens per sample, whatever --seq-len says

    def __init__(self, hidden: int = 64, layers: int = 8, heads: int = 4, intermediate: int = 128, seed: int = 0) -> None:
        super().__init__()
        import transformers

        torch.manual_seed(seed)
        cfg = transformers.BertConfig(vocab_size=2, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                      intermediate_size=intermediate, max_position_embeddings=NUM_PATCHES,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.patch = nn.Linear(PATCH * PATCH, hidden)
        self.encoder = transformers.BertModel(cfg, add_pooling_layer=False)
        self.classifier = nn.Linear(hidden, 10)
        self.config = cfg

    @staticmethod
    def patches(images: torch.Tensor) -> torch.Tensor:
        """(b, 8, 8) images -> (b, 16, 4) row-major 2x2 patches."""
        b = images.shape[0]
        x = images.reshape(b, 8 // PATCH, PATCH, 8 // PATCH, PATCH).permute(0, 1, 3, 2, 4)
        return x.reshape(b, NUM_PATCHES, PATCH * PATCH)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (b, 10)."""
        emb = self.patch(self.patches(images))
        mask = torch.ones(emb.shape[:2], dtype=torch.long)
        hidden = self.encoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        return self.classifier(hidden.mean(dim=1))

    def fine_tuning_batch(self, batch_size: int, seq_len: int = NUM_PATCHES, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random images and labels (sequence length is fixed at 16 patches)."""
        g = torch.Generator().manual_seed(seed)
        return {"images": torch.rand(batch_size, 8, 8, generator=g), "labels": torch.randint(0, 10, (batch_size,), generator=g)}

    def fine_tuning_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross entropy."""
        return nn.functional.cross_entropy(self(batch["images"]), batch["labels"])


def catalog_factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The model catalog's `digits-transformer` (architecture only; weights come from `pretrained_digits_transformer`)."""
    m = DigitsTransformer(**DEFAULTS)
    return m, (torch.zeros(1, 8, 8),)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (fraction) on numpy images/labels."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())


def pretrain(model: DigitsTransformer, data: DigitsSplit, seed: int = 0, epochs: int = 16) -> DigitsTransformer:
    """Full training on the first `PRETRAIN_FRACTION` of the (shuffled) training split; Adam, batch 32."""
    n = max(10, int(len(data.y_train) * PRETRAIN_FRACTION))
    x = torch.from_numpy(data.x_train[:n])
    y = torch.from_numpy(data.y_train[:n])
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, 32):
            idx = order[i: i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


def pretrained_digits_transformer(seed: int = 0) -> DigitsTransformer:
    """The centrally pretrained model (cached; trained in a few seconds on first use)."""
    path = cache_dir() / f"digits-transformer-v{ARCH_VERSION}-seed{seed}.pt"
    model = DigitsTransformer(**DEFAULTS, seed=seed)
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError) as exc:   # a corrupt cache entry: train again
            log.warning("cached digits-transformer weights at %s unreadable (%s); retraining", path, exc)
    data = load_digits_split(seed)
    pretrain(model, data, seed)
    log.info("pretrained digits-transformer: held-out accuracy %.3f", accuracy(model, data.x_test, data.y_test))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model
