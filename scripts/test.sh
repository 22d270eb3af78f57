#!/usr/bin/env bash
# Set up (apt + pip), make the test-only environments, and run the whole test suite. This is the README's second
# quick-start command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# lmms-eval in its own virtualenv (~/.cache/videomini; made once, about 2 minutes): tests/test_lmms_eval_live.py
printf '==> lmms-eval virtualenv for the tests (made once)\n'
bash scripts/lmms_eval_env.sh >/dev/null
printf '==> lint (ruff, the rules in pyproject.toml)\n'
python3 -m ruff check .
printf '==> tests\n'
python3 -m pytest -q "$@"
