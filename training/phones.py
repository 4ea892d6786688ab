"""Phone inventory: CMU phones, each engine's phones mapped onto them, and the visemes.

Every engine reports timings in its own phone set; everything downstream (targets,
evaluation) speaks the 39 CMU phones plus ``sil``. Diphthongs are split in two halves
because the mouth moves from one shape to the other within the segment.
"""

from __future__ import annotations

from typing import NamedTuple

from training.channels import VISEMES


class Phone(NamedTuple):
    """One aligned phone in the CMU set (``sil`` for pauses); times in seconds."""

    name: str
    start: float
    end: float


# CMU phone -> Oculus viseme (diphthongs list the viseme of each half).
PHONE_VISEMES: dict[str, tuple[str, ...]] = {
    "sil": ("sil",),
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "th": ("TH",), "dh": ("TH",),
    "t": ("DD",), "d": ("DD",),
    "k": ("kk",), "g": ("kk",), "hh": ("kk",),
    "ch": ("CH",), "jh": ("CH",), "sh": ("CH",), "zh": ("CH",),
    "s": ("SS",), "z": ("SS",),
    "n": ("nn",), "ng": ("nn",), "l": ("nn",),
    "r": ("RR",), "er": ("RR",),
    "aa": ("aa",), "ae": ("aa",), "ah": ("aa",), "ax": ("aa",),
    "eh": ("E",), "ih": ("I",), "iy": ("I",), "y": ("I",),
    "ao": ("O",), "uh": ("U",), "uw": ("U",), "w": ("U",),
    "ay": ("aa", "I"), "aw": ("aa", "U"), "oy": ("O", "I"), "ey": ("E", "I"), "ow": ("O", "U"),
}  # fmt: skip

CMU_PHONES: tuple[str, ...] = tuple(PHONE_VISEMES)
BILABIALS = frozenset({"p", "b", "m"})
assert all(v in VISEMES for vs in PHONE_VISEMES.values() for v in vs)

# Festival's radio phone set and flite's US phone set are CMU in lower case; only the pause
# symbols and a few variants differ.
_CMU_ALIASES = {"pau": "sil", "h#": "sil", "#": "sil", "ssil": "sil", "axr": "er", "ix": "ih"}

# espeak-ng English phoneme mnemonics (stress and length marks stripped) -> CMU phones.
# Several espeak phonemes are sequences in CMU terms (e.g. "aI@" in "fire"); the first
# part carries the segment, which is what matters for the mouth.
ESPEAK_TO_CMU: dict[str, str] = {
    "_": "sil", "_:": "sil", "_!": "sil", "_^_": "sil", "_|": "sil", "_#": "sil",
    "p": "p", "b": "b", "m": "m", "f": "f", "v": "v", "T": "th", "D": "dh",
    "t": "t", "d": "d", "t#": "t", "d#": "d", "t2": "t", "d2": "d", "?": "t",
    "k": "k", "g": "g", "x": "k", "h": "hh", "tS": "ch", "dZ": "jh", "S": "sh", "Z": "zh",
    "s": "s", "z": "z", "z#": "z", "n": "n", "n-": "n", "N": "ng", "l": "l", "l/": "l",
    "l#": "l", "L": "l", "r": "r", "r-": "r", "*": "t", "j": "y", "w": "w", "w#": "w",
    "a": "ae", "a#": "ax", "aa": "ae", "A:": "aa", "A@": "aa", "A": "aa", "0": "aa",
    "0#": "aa", "V": "ah", "@": "ax", "@2": "ax", "@5": "ax", "@L": "ax", "@-": "ax",
    "3": "er", "3:": "er", "a2": "ax", "e": "eh", "E": "eh", "e@": "eh", "E2": "eh",
    "eI": "ey", "i": "iy", "i:": "iy", "i@": "ih", "i@3": "ih", "I": "ih", "I#": "ih",
    "I2": "ih", "I2#": "ih", "O:": "ao", "O": "ao", "O@": "ao", "o@": "ao", "O2": "ao",
    "OI": "oy", "oU": "ow", "oU#": "ow", "o": "ow", "u:": "uw", "u": "uw", "U": "uh",
    "U@": "uh", "u@": "uh", "aI": "ay", "aI2": "ay", "aI@": "ay", "aI3": "ay", "aU": "aw", "aU@": "aw",
    "IR": "ih", "VR": "ah", "eIR": "ey", "3:r": "er", "@r": "er", "A@r": "aa", "e@r": "eh",
}  # fmt: skip


def cmu_phone(engine_phone: str) -> str:
    """Map a flite/festival phone to the CMU set (raises on an unknown phone)."""
    p = engine_phone.strip().lower()
    p = _CMU_ALIASES.get(p, p).rstrip("012")
    if p not in PHONE_VISEMES:
        raise KeyError(f"unknown phone {engine_phone!r}")
    return p


def espeak_phone(mnemonic: str) -> str | None:
    """Map an espeak-ng phoneme mnemonic to a CMU phone; ``None`` if it has no sound."""
    m = mnemonic.strip()
    for mark in "',%=;":  # stress, syllable and palatalisation marks
        m = m.replace(mark, "")
    if not m:
        return None
    if m in ESPEAK_TO_CMU:
        return ESPEAK_TO_CMU[m]
    # longest known prefix: espeak appends variant marks ("#", digits, ";") freely
    for n in range(len(m) - 1, 0, -1):
        if m[:n] in ESPEAK_TO_CMU:
            return ESPEAK_TO_CMU[m[:n]]
    raise KeyError(f"unknown espeak phoneme {mnemonic!r}")


def merge_pauses(phones: list[Phone]) -> list[Phone]:
    """Drop zero-length segments and merge neighbouring pauses into one."""
    out: list[Phone] = []
    for ph in phones:
        if ph.end - ph.start <= 1e-4:
            continue
        if out and ph.name == "sil" and out[-1].name == "sil":
            out[-1] = Phone("sil", out[-1].start, ph.end)
        else:
            out.append(ph)
    return out
