#!/usr/bin/env bash
# Create (once) the separate virtualenv that runs lmms-eval against `videomini serve`: lmms-eval 0.7.3 and what
# its openai_compatible backend imports (tests/lmms_eval_task/requirements.txt), no torchvision, no CUDA wheels.
# It cannot share videomini's environment (lmms-eval wants av<16 and torchvision; videomini uses av 18).
# Usage: bash scripts/lmms_eval_env.sh [DIR]   (default: $VIDEOMINI_LMMS_EVAL_ENV or ~/.cache/videomini/lmms-eval-0.7.3)
# Prints the environment's python. Does nothing when DIR already holds an environment made from the same list.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir="${1:-${VIDEOMINI_LMMS_EVAL_ENV:-$HOME/.cache/videomini/lmms-eval-0.7.3}}"
requirements=tests/lmms_eval_task/requirements.txt
stamp="$(cat "$requirements" constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$env_dir/.videomini-stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$env_dir"
  python3 -m venv "$env_dir"
  pip=("$env_dir/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -r "$requirements"
  "${pip[@]}" --no-deps lmms-eval==0.7.3
  if "$env_dir/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(nvidia-[^ ]*|torchvision|triton) "; then
    echo "lmms_eval_env.sh: CUDA or torchvision packages got into $env_dir" >&2
    exit 1
  fi
  echo "$stamp" > "$env_dir/.videomini-stamp"
fi
echo "$env_dir/bin/python"
