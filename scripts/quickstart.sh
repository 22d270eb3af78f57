#!/usr/bin/env bash
# Quick start: set up, then run the main job (`videomini ask`) on the bundled example video (made by a script:
# spoken sentences and on-screen captions at known times).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "${VIDEOMINI_EXTRAS:-test}"
python3 examples/make_example.py examples/example.mp4
# The default model (ICTNLP/llava-mini-llama-3.1-8b, or $VIDEOMINI_MODEL) answers when it is available; on an
# offline machine without it, `ask` answers from the video's speech and on-screen text, quoted with their times.
videomini ask examples/example.mp4 "When does the train to London leave?"
