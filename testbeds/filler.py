"""Seeded filler text (the haystack of long-context tasks) and random keys, identical on every machine.

Sentences are built from fixed word lists, so no file or download is involved; `fill_to_tokens` adds
sentences until a token budget (SmolLM2's tokenizer, or any with `__call__` -> input_ids) is reached.
"""
from __future__ import annotations

import random
import uuid
from typing import Any

ADJ = ("quiet", "bright", "old", "small", "green", "distant", "busy", "narrow", "warm", "heavy", "silver", "early",
       "gentle", "broken", "hidden", "tall", "muddy", "wooden", "empty", "crowded")
NOUN = ("river", "market", "teacher", "garden", "train", "village", "painter", "bridge", "forest", "harbor",
        "library", "farmer", "window", "mountain", "kitchen", "sailor", "road", "castle", "orchard", "station")
VERB = ("passed", "watched", "followed", "crossed", "painted", "visited", "repaired", "described", "carried",
        "opened", "found", "cleaned", "measured", "ignored", "remembered", "counted")
PLACE = ("the hill", "the old town", "the coast", "the valley", "the square", "the lake", "the north road",
         "the harbor wall", "the school", "the mill")
TIME = ("in the morning", "after lunch", "at dusk", "before the rain", "every Sunday", "in late autumn",
        "during the fair", "at noon", "on the first day", "that winter")
WORDS = ("apple", "anchor", "basket", "candle", "cotton", "desert", "engine", "feather", "garlic", "helmet",
         "island", "jacket", "kettle", "ladder", "magnet", "needle", "orange", "pepper", "quartz", "ribbon",
         "saddle", "tablet", "umbrella", "velvet", "walnut", "yogurt", "zipper", "bottle", "carpet", "dolphin",
         "eagle", "falcon", "guitar", "hammer", "igloo", "jungle", "koala", "lemon", "mirror", "napkin", "oyster",
         "pencil", "rocket", "salmon", "tomato", "violin", "wallet", "yacht", "zebra", "button", "copper",
         "dragon", "forest", "glacier", "harvest", "insect", "jewel", "lantern", "meadow", "nectar", "onion",
         "pillow", "puzzle", "rabbit", "shadow", "thunder", "tunnel", "valley", "whistle", "willow", "blanket",
         "cactus", "donkey", "ember", "fossil", "goblet", "hazel", "ivory", "jasmine", "kernel", "lizard")


def sentence(rng: random.Random) -> str:
    """One plain filler sentence."""
    a, b = rng.sample(NOUN, 2)
    return (f"The {rng.choice(ADJ)} {a} {rng.choice(VERB)} the {rng.choice(ADJ)} {b} near {rng.choice(PLACE)} "
            f"{rng.choice(TIME)}.")


def key_phrase(rng: random.Random) -> str:
    """A two-word key like `wooden-lantern` (RULER's word keys)."""
    return f"{rng.choice(ADJ)}-{rng.choice(WORDS)}"


def magic_number(rng: random.Random) -> str:
    """A 7-digit number (RULER's needle values)."""
    return str(rng.randint(1_000_000, 9_999_999))


def seeded_uuid(rng: random.Random) -> str:
    """A UUID4-formatted string drawn from `rng` (not the OS entropy)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def n_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fill_to_tokens(tokenizer: Any, rng: random.Random, budget: int) -> list[str]:
    """Filler sentences whose tokens (each counted with a leading space) add up to about `budget` (never above)."""
    out: list[str] = []
    used = 0
    while True:
        s = sentence(rng)
        t = n_tokens(tokenizer, " " + s)
        if used + t > budget:
            return out
        out.append(s)
        used += t
