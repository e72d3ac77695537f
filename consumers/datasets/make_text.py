"""Generate ``sentiment.csv``: short labelled reviews for ``builtin:sentiment``.

Sentences come from templates filled with word lists under a fixed seed, so the file is exactly
reproducible: ``python -m consumers.datasets.make_text`` rewrites it byte for byte. About one
sentence in six is negated ("was not great" is negative, "was not bad" is positive), so a
bag-of-words model cannot reach perfect accuracy while a sequence model can.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

SEED = 20240607
N_ROWS = 2000
OUT = Path(__file__).with_name("sentiment.csv")

SUBJECTS = ["movie", "film", "book", "restaurant", "hotel", "phone", "laptop", "service",
            "meal", "album", "show", "game", "camera", "coffee", "room", "staff", "app", "novel"]
POSITIVE = ["great", "wonderful", "excellent", "delightful", "fantastic", "amazing", "superb",
            "lovely", "brilliant", "charming", "pleasant", "outstanding", "enjoyable", "good"]
NEGATIVE = ["terrible", "awful", "boring", "disappointing", "dreadful", "poor", "horrible",
            "dull", "mediocre", "annoying", "bad", "frustrating", "useless", "bland"]
POSITIVE_VERBS = ["loved", "enjoyed", "adored", "recommend", "appreciated", "liked"]
NEGATIVE_VERBS = ["hated", "regretted", "disliked", "returned", "avoided", "resented"]
INTENSIFIERS = ["", "", "really ", "very ", "truly ", "quite ", "absolutely "]
TIMES = ["", "", " yesterday", " last week", " this morning", " on my trip", " again"]

# {s} subject, {a} adjective, {i} intensifier, {v} verb, {t} time phrase
DIRECT = [
    "The {s} was {i}{a}.",
    "What a {i}{a} {s}!",
    "I thought the {s} was {i}{a}{t}.",
    "Honestly, a {i}{a} {s}.",
    "This {s} is {i}{a} and I would say so again.",
    "I {v} the {s}{t}.",
    "We {v} this {s}.",
    "Our {s} was {i}{a}{t}.",
    "My friends found the {s} {i}{a}.",
    "Overall the {s} felt {i}{a}.",
]
NEGATED = [
    "The {s} was not {a} at all.",
    "I would not call the {s} {a}.",
    "Sadly the {s} was never {a}{t}.",
    "The {s} wasn't {a}, to be honest.",
]


def _sentence(rng: random.Random, positive: bool) -> str:
    negated = rng.random() < 1 / 6
    # A negated sentence uses the opposite word: "not bad" reads positive.
    word_positive = positive != negated
    adjectives = POSITIVE if word_positive else NEGATIVE
    template = rng.choice(NEGATED if negated else DIRECT)
    verbs = POSITIVE_VERBS if word_positive else NEGATIVE_VERBS
    text = template.format(s=rng.choice(SUBJECTS), a=rng.choice(adjectives),
                           i="" if negated else rng.choice(INTENSIFIERS),
                           v=rng.choice(verbs), t=rng.choice(TIMES))
    return text[0].upper() + text[1:]


def generate(n_rows: int = N_ROWS, seed: int = SEED) -> list[tuple[str, str]]:
    """``(text, label)`` rows, balanced, shuffled, deterministic for ``seed``."""
    rng = random.Random(seed)
    rows = [(_sentence(rng, i % 2 == 0), "positive" if i % 2 == 0 else "negative")
            for i in range(n_rows)]
    rng.shuffle(rows)
    return rows


def render(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> None:
    OUT.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {N_ROWS} rows to {OUT}")


if __name__ == "__main__":
    main()
