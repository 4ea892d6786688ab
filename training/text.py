"""Sentence source: Debian's ``fortunes`` split into sentences whose words are all in CMUdict.

Keeping only dictionary words means every engine pronounces them from a lexicon rather
than letter-to-sound guesses, and the sentences stay phonetically varied real English.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pocketsphinx

FORTUNES_DIR = Path("/usr/share/games/fortunes")
CMUDICT = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def cmu_words() -> frozenset[str]:
    """Headwords of the CMU dictionary shipped with pocketsphinx (variants folded)."""
    words = set()
    with CMUDICT.open(encoding="utf-8") as f:
        for line in f:
            words.add(line.split(" ", 1)[0].split("(", 1)[0])
    return frozenset(words)


def sentences(min_words: int = 4, max_words: int = 14) -> list[str]:
    """Unique, sorted (hence reproducible) fortune sentences made only of CMUdict words."""
    vocab = cmu_words()
    found: set[str] = set()
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or not path.is_file():  # skip .dat/.u8 indexes and links
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        for fortune in text.split("\n%\n"):
            flat = " ".join(fortune.split())
            for sent in _SENTENCE_END.split(flat):
                if not sent or sent[-1] not in ".!?" or any(c.isdigit() for c in sent):
                    continue
                if re.search(r"[^A-Za-z ,.!?'\-;:]", sent):
                    continue
                words = _WORD.findall(sent.lower())
                if not min_words <= len(words) <= max_words:
                    continue
                # single letters other than "a"/"I" are initials, spelled out by the engines
                if all(w in vocab and (len(w) > 1 or w in "ai") for w in words):
                    found.add(sent)
    return sorted(found)


def is_held_out(sentence: str, fraction: float = 0.1) -> bool:
    """Stable sentence-level split: a hash decides, so it does not depend on ordering."""
    h = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:4], "big")
    return h < fraction * 2**32
