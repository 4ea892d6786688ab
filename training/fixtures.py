"""Write the committed test fixture: a few seconds of held-out-voice speech + its alignment.

``python -m training.fixtures`` regenerates ``tests/fixtures/speech_16k.wav`` (16 kHz PCM16
mono) and ``speech_16k.json`` (CMU phones with start/end seconds, bilabial spans listed) so
tests never need a TTS engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from training.channels import SAMPLE_RATE
from training.phones import BILABIALS
from training.synth import Prosody, Voice, synthesize

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
TEXT = "Bob bought a map of the moon. My puppy, Pam, begs for more apple pie, maybe."
VOICE = Voice("flite", "rms")  # the held-out voice: the network never trained on it
LEAD_SILENCE = 0.3


def main() -> None:
    utt = synthesize(VOICE, TEXT, Prosody())
    pad = np.zeros(round(LEAD_SILENCE * SAMPLE_RATE), np.float32)
    audio = np.concatenate([pad, utt.audio, pad])
    audio = 0.5 * audio / np.max(np.abs(audio))
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    sf.write(FIXTURE_DIR / "speech_16k.wav", audio, SAMPLE_RATE, subtype="PCM_16")
    phones = [
        {
            "phone": p.name,
            "start": round(p.start + LEAD_SILENCE, 4),
            "end": round(p.end + LEAD_SILENCE, 4),
        }
        for p in utt.phones
    ]
    meta = {
        "text": TEXT,
        "voice": VOICE.key,
        "sample_rate": SAMPLE_RATE,
        "duration": round(len(audio) / SAMPLE_RATE, 4),
        "phones": phones,
        "bilabials": [p for p in phones if p["phone"] in BILABIALS],
    }
    (FIXTURE_DIR / "speech_16k.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
