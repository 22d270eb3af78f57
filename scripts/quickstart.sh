#!/usr/bin/env bash
# Quick start: set up, make the bundled example video (spoken sentences and on-screen captions at known times),
# then run the main job (`videomini ask`) on it. One line per step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "${VIDEOMINI_EXTRAS:-test}"
printf '==> the example video: examples/example.mp4\n'
python3 examples/make_example.py examples/example.mp4
# The default model (ICTNLP/llava-mini-llama-3.1-8b, or $VIDEOMINI_MODEL) answers when it is available; on an
# offline machine without it, `ask` answers from the video's speech and on-screen text, quoted with their times.
printf '==> videomini ask examples/example.mp4 "When does the train to London leave?"\n'
videomini ask examples/example.mp4 "When does the train to London leave?"
