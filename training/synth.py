"""Speech synthesis with exact phone timings from three Debian engines.

* flite: the CLI prints each segment's end time (``-psdur``).
* festival: a Scheme batch script writes the wave and the Segment relation's end times.
* espeak-ng: the C API through ctypes; phoneme events carry ``audio_position`` (the CLI
  prints no timings).

Every engine's phones are mapped to CMU phones (``training.phones``) and the audio is
resampled to 16 kHz mono float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from training.channels import SAMPLE_RATE
from training.phones import Phone, cmu_phone, espeak_phone, merge_pauses


class Voice(NamedTuple):
    engine: str  # "flite" | "festival" | "espeak"
    name: str  # engine's voice name (espeak: "language+variant")

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


class Prosody(NamedTuple):
    """Per-utterance variation: ``stretch`` > 1 is slower speech, ``pitch`` is a factor."""

    stretch: float = 1.0
    pitch: float = 1.0


class Utterance(NamedTuple):
    audio: np.ndarray  # float32 mono at SAMPLE_RATE
    phones: list[Phone]


FLITE_VOICES = ("slt", "awb", "rms", "kal16")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
ESPEAK_VOICES = (
    "en-us+m1", "en-us+m3", "en-us+f2", "en-us+f4", "en+m2", "en+f3", "en+klatt2",
    "en-gb-scotland+m7", "en-us+f5", "en+m5",
)  # fmt: skip


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return audio


def _from_end_times(pairs: list[tuple[str, float]]) -> list[Phone]:
    phones, start = [], 0.0
    for name, end in pairs:
        phones.append(Phone(cmu_phone(name), start, end))
        start = end
    return merge_pauses(phones)


def flite(voice: str, text: str, prosody: Prosody) -> Utterance:
    """Synthesize with the flite CLI; ``-psdur`` prints ``phone:end`` pairs."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        out = subprocess.run(
            ["flite", "-voice", voice,
             "--setf", f"duration_stretch={prosody.stretch:.3f}",
             "--setf", f"int_f0_target_mean={110 * prosody.pitch if voice in ('awb', 'rms', 'kal16') else 170 * prosody.pitch:.1f}",
             "-psdur", "-t", text, "-o", str(wav)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        audio, rate = sf.read(wav, dtype="float32")
    pairs = []
    for tok in out.stdout.split():
        name, _, end = tok.rpartition(":")
        pairs.append((name, float(end)))
    return Utterance(_to_16k(audio, rate), _from_end_times(pairs))


def festival_batch(voice: str, items: list[tuple[str, Prosody]]) -> list[Utterance]:
    """Synthesize many sentences in one festival process (start-up dominates otherwise)."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = [f"(voice_{voice})"]
        for i, (text, prosody) in enumerate(items):
            safe = text.replace("\\", " ").replace('"', " ")
            lines += [
                f"(Parameter.set 'Duration_Stretch {prosody.stretch:.3f})",
                f'(set! utt (utt.synth (Utterance Text "{safe}")))',
                f'(utt.save.wave utt "{tmp}/{i}.wav" \'riff)',
                f'(set! fd (fopen "{tmp}/{i}.seg" "w"))',
                '(mapcar (lambda (s) (format fd "%s %f\\n" (item.name s) (item.feat s "end")))'
                " (utt.relation.items utt 'Segment))",
                "(fclose fd)",
            ]
        script = Path(tmp) / "batch.scm"
        script.write_text("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", str(script)], capture_output=True, check=True)
        out = []
        for i in range(len(items)):
            audio, rate = sf.read(f"{tmp}/{i}.wav", dtype="float32")
            pairs = [
                (name, float(end))
                for name, end in (
                    ln.split() for ln in Path(f"{tmp}/{i}.seg").read_text().splitlines()
                )
            ]
            out.append(Utterance(_to_16k(audio, rate), _from_end_times(pairs)))
    return out


class _EspeakEvent(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = (
            ("number", ctypes.c_int),
            ("name", ctypes.c_char_p),
            ("string", ctypes.c_char * 8),
        )

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    )


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_AUDIO_OUTPUT_SYNCHRONOUS, _INITIALIZE_PHONEME_EVENTS = 2, 0x0001
_RATE, _PITCH = 1, 3


class Espeak:
    """One espeak-ng instance per process (the library keeps global state)."""

    def __init__(self) -> None:
        lib = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self._lib = ctypes.CDLL(lib)
        self._rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 200, None, _INITIALIZE_PHONEME_EVENTS
        )
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # keep a reference alive
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, events) -> int:  # type: ignore[no-untyped-def]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((ev.id.string.decode(errors="replace"), ev.audio_position))
            i += 1
        return 0

    def synth(self, voice: str, text: str, prosody: Prosody) -> Utterance:
        self._chunks, self._events = [], []
        self._lib.espeak_SetVoiceByName(voice.encode())
        self._lib.espeak_SetParameter(_RATE, round(175 / prosody.stretch), 0)
        self._lib.espeak_SetParameter(_PITCH, min(99, round(50 * prosody.pitch)), 0)
        data = text.encode() + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        total = len(audio) / self._rate
        phones, prev_name, prev_t = [], "sil", 0.0
        for mnemonic, pos_ms in self._events:
            name = espeak_phone(mnemonic)
            if name is None:
                continue
            t = min(pos_ms / 1000.0, total)
            phones.append(Phone(prev_name, prev_t, t))
            prev_name, prev_t = name, t
        phones.append(Phone(prev_name, prev_t, total))
        audio = _to_16k(audio, self._rate)
        return Utterance(audio, merge_pauses(_claim_closures(audio, phones)))


_STOPS = frozenset({"p", "b", "t", "d", "k", "g", "ch", "jh"})


def _claim_closures(audio: np.ndarray, phones: list[Phone]) -> list[Phone]:
    """Move espeak stop onsets back over their silent closure.

    espeak reports a stop's phoneme event at the release, leaving the closure gap inside
    the previous phone; for lip and jaw targets the closure belongs to the stop.
    """
    hop = SAMPLE_RATE // 200  # 5 ms energy frames
    n = len(audio) // hop
    db = 10 * np.log10(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    quiet = db < np.percentile(db, 90) - 30
    out = list(phones)
    for i in range(1, len(out)):
        ph, prev = out[i], out[i - 1]
        if ph.name not in _STOPS or prev.name == "sil":
            continue
        k = min(round(ph.start * 200), n) - 1
        while k > 0 and not quiet[k] and ph.start - k / 200 < 0.03:  # release burst frames
            k -= 1
        j = k
        while j > 0 and quiet[j - 1] and j / 200 > prev.start + 0.02:
            j -= 1
        if quiet[k] and j < k:
            out[i - 1] = Phone(prev.name, prev.start, j / 200)
            out[i] = Phone(ph.name, j / 200, ph.end)
    return out


_espeak: Espeak | None = None


def synthesize(voice: Voice, text: str, prosody: Prosody) -> Utterance:
    """Synthesize one sentence with flite or espeak-ng (festival goes through the batch API)."""
    global _espeak
    if voice.engine == "flite":
        return flite(voice.name, text, prosody)
    if voice.engine == "espeak":
        if _espeak is None:
            _espeak = Espeak()
        return _espeak.synth(voice.name, text, prosody)
    return festival_batch(voice.name, [(text, prosody)])[0]
