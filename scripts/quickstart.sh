#!/usr/bin/env bash
# Quick start: set up, then run the main job (`videomini ask`) on the bundled example video.
# The model is $VIDEOMINI_MODEL, else ICTNLP/llava-mini-llama-3.1-8b when it is in the Hugging Face cache, else
# (offline machines such as CI) the tiny random golden checkpoint in ../shared — which runs the real pipeline
# but, having random weights, answers with random text.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "${VIDEOMINI_EXTRAS:-test}"
python3 examples/make_example.py examples/example.mp4
model="${VIDEOMINI_MODEL:-}"
if [ -z "$model" ]; then
  if python3 -c "from huggingface_hub import snapshot_download as s; s('ICTNLP/llava-mini-llama-3.1-8b', local_files_only=True)" 2>/dev/null; then
    model="ICTNLP/llava-mini-llama-3.1-8b"
  else
    model="$(cd .. && pwd)/shared/golden/llavamini_tiny"
    echo "note: ICTNLP/llava-mini-llama-3.1-8b is not cached here; running the tiny random checkpoint $model"
  fi
fi
videomini ask examples/example.mp4 "What is written on the screen, and when?" --model "$model" --max-new-tokens 32
