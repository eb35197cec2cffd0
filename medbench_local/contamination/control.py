"""The control a model cannot have trained on: the same item after a meaning-preserving rewrite.

Why a rewrite of the same items (and not other items): the paired signal compares a biomedical model with its
base on the *same* text, and the control removes what the two models differ in on any text of this kind (the
fine-tune knows medical vocabulary better, whether or not it saw the benchmark). The rewrite keeps vocabulary,
register and length and changes what only a memorised copy would reveal:

* **options** shuffled and relettered (A, B, ... in the new order), the gold answer's letter following its text;
* **numbers** with two or more digits (ages, doses, laboratory values; "type 2" and "grade 3" stay) get their last
  digit moved by one (67 -> 68 or 66, 7.3 -> 7.4 or 7.2), the same number the same way throughout the item;
* **person names** (the capitalised word after a title, "Mr. Jones", wherever it recurs in the item; and the given
  names in ``GIVEN``) replaced by other names from ``REPLACEMENTS``, consistently throughout the item.

All of it is drawn from a random generator seeded with the probe seed and the item id (SHA-256), so the rewrite is
the same on every machine and version of Python (``random.Random`` with an integer seed is stable). The rewrite
is shallow on purpose: it must not change the clinical meaning; an item without options, long numbers or
names comes out unchanged and carries no evidence (the summary counts them).
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

REWRITE_VERSION = "rewrite-1"
GIVEN = ("James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Charles",
         "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
         "Edda", "Anna", "Maria", "Peter", "Paul", "George", "Emma", "Olivia", "Sophia", "Daniel")
REPLACEMENTS = ("Alden", "Brisa", "Corin", "Dagny", "Elowen", "Fintan", "Galen", "Hester", "Ilka", "Jory",
                "Kestrel", "Lisel", "Marek", "Nerys", "Orrin", "Perpetua", "Quill", "Rowan", "Sabine", "Tamsin",
                "Ulric", "Vesna", "Wren", "Ximena", "Yorick", "Zelda", "Anselm", "Bettina", "Cosmo", "Delphine")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w])")
_TITLED = re.compile(r"\b(Mr|Mrs|Ms|Miss|Dr)\.? ([A-Z][a-z]+)\b")
_GIVEN = re.compile(r"\b(" + "|".join(GIVEN) + r")\b")
_ANSWER_KEYS = ("answer", "gold")


def _rng(seed: int, item_id: str) -> random.Random:
    digest = hashlib.sha256(f"{REWRITE_VERSION}\0{seed}\0{item_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def nudge_number(text: str, rng: random.Random) -> str:
    """A number with its last digit moved by one (up or down, staying a digit), same length and decimals;
    numbers with fewer than two digits are returned unchanged."""
    digits = [c for c in text if c.isdigit()]
    if len(digits) < 2:
        return text
    last = int(text[-1])
    step = rng.choice((-1, 1))
    new = last + step if 0 <= last + step <= 9 else last - step
    if len(text.split(".")[0]) == 1 and text[0] != "0" and "." not in text and new == 0:
        new = last + 1  # never make a one-digit integer part zero
    return text[:-1] + str(new)


class _Rewriter:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.numbers: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.pool = list(REPLACEMENTS)
        rng.shuffle(self.pool)

    def _name(self, name: str) -> str:
        if name not in self.names:
            self.names[name] = self.pool[len(self.names) % len(self.pool)]
        return self.names[name]

    def learn(self, value: str) -> None:
        """Surnames met after a title anywhere in the item are names everywhere in it ("Mr. Smith" ... "Smith's")."""
        for match in _TITLED.finditer(value):
            self._name(match.group(2))

    def text(self, value: str) -> str:
        value = _NUMBER.sub(lambda m: self.numbers.setdefault(m.group(1), nudge_number(m.group(1), self.rng)), value)
        value = _GIVEN.sub(lambda m: self._name(m.group(1)), value)
        known = [name for name in self.names if name not in self.names.values()]
        if known:
            pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(known, key=len, reverse=True))) + r")\b")
            value = pattern.sub(lambda m: self.names[m.group(1)], value)
        return value


def rewrite(payload: dict[str, Any], *, seed: int, item_id: str) -> dict[str, Any]:
    """The item's control: a copy of its payload with options shuffled and relettered, numbers nudged and
    names replaced (module docstring). The gold answer follows its option."""
    rng = _rng(seed, item_id)
    out = dict(payload)
    options = payload.get("options")
    if isinstance(options, dict) and len(options) > 1:
        letters = list(options)
        order = list(letters)
        rng.shuffle(order)
        out["options"] = {new: options[old] for new, old in zip(letters, order)}
        moved = {old: new for new, old in zip(letters, order)}
        for key in _ANSWER_KEYS:
            if isinstance(payload.get(key), str) and payload[key] in moved:
                out[key] = moved[payload[key]]
    writer = _Rewriter(rng)
    for value in out.values():
        if isinstance(value, str):
            writer.learn(value)
    for key, value in list(out.items()):
        if isinstance(value, str) and key not in _ANSWER_KEYS:
            out[key] = writer.text(value)
        elif key == "options" and isinstance(value, dict):
            out[key] = {letter: writer.text(text) if isinstance(text, str) else text for letter, text in value.items()}
    return out
