"""Prompts and responses of the toy world.

Three kinds of prompt, about 3,300 distinct in all (reviews ~82%, arithmetic ~16%, lists ~2%):
  review      "review the red lamp ."            -> sentences about the item with sentiment words
  list        "list 3 fruits ."                   -> members of the category, comma separated
  arithmetic  "what is 7 plus 5 ?"                -> "the answer is 12 ."
Responses are drawn with controllable attributes (sentiment, staying on topic, repetition, length,
correctness), so a generator of mixed quality and the gold reward share one vocabulary.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

ITEMS = ["phone", "lamp", "chair", "table", "book", "camera", "bike", "kettle", "watch", "jacket", "shoe",
         "bag", "radio", "clock", "guitar", "desk", "pillow", "blanket", "mug", "bottle", "laptop", "printer",
         "oven", "fan", "heater", "mirror", "sofa", "bed", "tent", "boot"]
ADJECTIVES = ["red", "blue", "green", "black", "white", "small", "large", "old", "new", "wooden", "metal",
              "plastic", "silver", "golden", "tiny", "heavy", "light", "round", "square", "soft", "bright", "dark",
              "shiny", "dusty", "modern", "classic", "tall", "short", "thin", "thick"]
REVIEW_TEMPLATES = ["review the {adj} {item} .", "what do you think of the {adj} {item} ?",
                    "describe the {adj} {item} ."]
POSITIVE = ["great", "excellent", "lovely", "sturdy", "reliable", "beautiful", "comfortable", "useful",
            "perfect", "fantastic"]
NEGATIVE = ["awful", "broken", "flimsy", "ugly", "useless", "terrible", "poor", "noisy", "fragile",
            "disappointing"]
REVIEW_FRAMES = ["the {item} is {a} and {b} .", "i think the {item} is {a} .", "overall it is {a} .",
                 "it feels {a} and {b} .", "the {item} looks {a} ."]

CATEGORIES = {
    "fruits": ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum"],
    "animals": ["cat", "dog", "horse", "tiger", "lion", "rabbit", "mouse", "sheep", "goat", "wolf"],
    "colors": ["purple", "pink", "brown", "gray", "yellow", "cyan", "violet", "beige", "maroon", "teal"],
    "tools": ["hammer", "saw", "drill", "wrench", "pliers", "chisel", "shovel", "rake", "axe", "file"],
    "vehicles": ["car", "bus", "train", "truck", "boat", "plane", "tram", "van", "ship", "scooter"],
    "drinks": ["water", "tea", "coffee", "milk", "juice", "soda", "cocoa", "lemonade", "cider", "smoothie"],
}
LIST_TEMPLATES = ["list {n} {category} .", "name {n} {category} ."]
LIST_COUNTS = [2, 3, 4, 5]

MAX_OPERAND = 12
ARITHMETIC_TEMPLATES = ["what is {a} {op} {b} ?", "compute {a} {op} {b} ."]
ANSWER_FRAMES = ["the answer is {c} .", "it is {c} ."]
MAX_NUMBER = 2 * MAX_OPERAND + 6  # answers and near-misses


def all_prompts() -> list[str]:
    prompts = [t.format(adj=a, item=i) for t in REVIEW_TEMPLATES for i in ITEMS for a in ADJECTIVES]
    prompts += [t.format(n=n, category=c) for t in LIST_TEMPLATES for c in CATEGORIES for n in LIST_COUNTS]
    for t in ARITHMETIC_TEMPLATES:
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                prompts.append(t.format(a=a, op="plus", b=b))
                if a >= b:
                    prompts.append(t.format(a=a, op="minus", b=b))
    return prompts


def is_held_out(prompt: str, fraction: float = 0.1) -> bool:
    """A fixed, seed-independent split: held-out prompts are never used for SFT or preference data."""
    return zlib.crc32(prompt.encode()) % 1000 < fraction * 1000


def split_prompts() -> tuple[list[str], list[str]]:
    prompts = all_prompts()
    return [p for p in prompts if not is_held_out(p)], [p for p in prompts if is_held_out(p)]


# -- parsing prompts (the gold reward reads the prompt text) -------------------------------------------------


@dataclass(frozen=True)
class PromptInfo:
    kind: str  # review | list | arithmetic
    item: str | None = None
    category: str | None = None
    count: int | None = None
    answer: int | None = None


def parse_prompt(prompt: str) -> PromptInfo:
    words = prompt.split()
    if words[0] in ("list", "name") and len(words) >= 3 and words[2] in CATEGORIES:
        return PromptInfo("list", category=words[2], count=int(words[1]))
    if "plus" in words or "minus" in words:
        nums = [int(w) for w in words if w.isdigit()]
        return PromptInfo("arithmetic", answer=nums[0] + nums[1] if "plus" in words else nums[0] - nums[1])
    item = next((w for w in words if w in ITEMS), None)
    if item is None:
        raise ValueError(f"not a toy prompt: {prompt!r}")
    return PromptInfo("review", item=item)


# -- responses with controllable attributes -----------------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """sentiment in [-1, 1]: chance of positive words; on_topic: talk about the asked item/category;
    repeats: copies of the last sentence appended; length: sentences or list entries; correct: arithmetic."""

    sentiment: float = 1.0
    on_topic: bool = True
    repeats: int = 0
    length: int = 2
    correct: bool = True


# The best answer the world knows: positive, on topic, no repeats, two sentences, correct.
IDEAL = Attributes(sentiment=1.0, on_topic=True, repeats=0, length=2, correct=True)


def random_attributes(rng: random.Random) -> Attributes:
    """Mixed quality, for the base model's SFT data."""
    return Attributes(sentiment=rng.uniform(-1, 1), on_topic=rng.random() < 0.7,
                      repeats=rng.choice([0, 0, 0, 1, 2]), length=rng.randint(1, 4), correct=rng.random() < 0.5)


def _sentiment_word(rng: random.Random, sentiment: float) -> str:
    return rng.choice(POSITIVE if rng.random() < (1 + sentiment) / 2 else NEGATIVE)


def respond(prompt: str, attrs: Attributes, rng: random.Random) -> str:
    info = parse_prompt(prompt)
    if info.kind == "review":
        item = info.item if attrs.on_topic else rng.choice([i for i in ITEMS if i != info.item])
        sentences = [rng.choice(REVIEW_FRAMES).format(item=item, a=_sentiment_word(rng, attrs.sentiment),
                                                      b=_sentiment_word(rng, attrs.sentiment))
                     for _ in range(attrs.length)]
    elif info.kind == "list":
        pool = CATEGORIES[info.category] if attrs.on_topic else [
            w for c, ws in CATEGORIES.items() if c != info.category for w in ws]
        n = max(1, info.count + rng.choice([-1, 0, 0, 1]) if attrs.length > 1 else info.count)
        entries = rng.sample(pool, min(n, len(pool)))
        sentences = [" , ".join(entries) + " ."]
    else:
        offsets = [d for d in (-3, -2, -1, 1, 2, 3) if info.answer + d >= 0]
        answer = info.answer if attrs.correct else info.answer + rng.choice(offsets)
        sentences = [rng.choice(ANSWER_FRAMES).format(c=answer)]
    sentences += [sentences[-1]] * attrs.repeats
    return " ".join(sentences)


def vocabulary() -> list[str]:
    """Every word the world can produce, for the word-level tokenizer."""
    words: set[str] = set()
    for text in (REVIEW_TEMPLATES + REVIEW_FRAMES + LIST_TEMPLATES + ARITHMETIC_TEMPLATES + ANSWER_FRAMES):
        words.update(w for w in text.split() if not w.startswith("{"))
    words.update(ITEMS + ADJECTIVES + POSITIVE + NEGATIVE + list(CATEGORIES) + ["plus", "minus", ","])
    words.update(w for ws in CATEGORIES.values() for w in ws)
    words.update(str(n) for n in range(MAX_NUMBER + 1))
    return sorted(words)
