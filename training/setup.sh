#!/usr/bin/env bash
# Installs what `make model` needs: Debian TTS engines, voices, sox, the fortunes text
# source and ALSA's sample recordings, then the `train` extra (CPU torch wheel pinned in
# pyproject.toml, so no CUDA build is ever pulled). Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  flite                      # voices slt, awb, rms, kal16 (CLI prints phone end times)
  festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  espeak-ng libespeak-ng1    # C API used through ctypes for phoneme events
  sox libsox-fmt-all         # tempo/pitch augmentation
  fortunes fortunes-min      # sentence source
  alsa-utils                 # /usr/share/sounds/alsa/*.wav: real speech for the report
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

.venv/bin/pip install --disable-pip-version-check -q -e '.[train]'
