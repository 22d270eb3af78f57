#!/usr/bin/env bash
# Set up (apt + pip) and run the whole test suite. This is the README's second quick-start command and
# what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
python3 -m pytest -q "$@"
