#!/usr/bin/env bash
# Install what videomini needs on a fresh Debian machine, one line per step: system packages (ffmpeg for the
# ffmpeg backend and test videos, espeak-ng for narrated videos, chromium for the `serve` page tests), torch
# (CPU build, pinned by constraints.txt), then videomini with its extras. pip shows its own progress.
# Test-only environments (lmms-eval's virtualenv) are made by scripts/test.sh, not here.
# Usage: bash scripts/setup.sh [EXTRAS]    (default extras: test — decord, ffmpeg-python, speech/OCR/text models)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
step() { printf '==> %s\n' "$*"; }
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser the `videomini serve` tests drive (Playwright)
if [ ${#need[@]} -gt 0 ]; then
  step "system packages: installing ${need[*]} (apt-get)"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  step "system packages: ffmpeg, espeak-ng and chromium already installed"
fi
pip=(python3 -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt)
step "torch 2.13.0 (CPU build; about 200 MB the first time)"
"${pip[@]}" "torch==2.13.0"
step "videomini with extras [${extras}]"
"${pip[@]}" -e ".[${extras}]"
step "videomini $(python3 -c 'import videomini; print(videomini.__version__)') installed: $(command -v videomini)"
