#!/usr/bin/env bash
# The CUDA check for a bare GPU machine, in one command (sized for <= 8 minutes on one H100):
#
#   bash scripts/gpu_check.sh [summary.json]
#
# The machine is expected to have python3 with torch (CUDA build) and transformers 5, and no internet. What is
# missing (PyAV, faiss, bitsandbytes, the other runtime dependencies) is installed from `wheelhouse/`, a folder
# of wheels carried along with the checkout, made beforehand on a machine with internet:
#
#   pip download --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
#       -d wheelhouse av faiss-cpu bitsandbytes psutil typer rich safetensors tokenizers pillow numpy
#
# (match --python-version to the GPU machine's python3; wheelhouse/ is gitignored). videomini itself is
# installed without dependencies, so the machine's own torch and transformers stay. Then the tests marked `cuda`
# run (tests/test_cuda.py: golden ids on CUDA in fp32, bf16 logits, ask through sdpa against the CPU, the planner
# against torch.cuda.max_memory_allocated on a full-width slice, batched vs one-by-one encoding), and their
# figures go to one JSON summary (default gpu_check.json) with the pytest outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
SUMMARY="$(realpath -m "${1:-gpu_check.json}")"
PYTHON="${PYTHON:-python3}"

"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch %s, built for CUDA %s)" % (torch.__version__, torch.version.cuda))
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

if [ -d wheelhouse ]; then
  "$PYTHON" -m pip install -q --no-index --find-links wheelhouse --only-binary=:all: \
      av faiss-cpu bitsandbytes psutil typer rich safetensors tokenizers pillow numpy pytest || true
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import av, faiss, videomini.video" \
  || { echo "gpu_check: PyAV / faiss missing: bring wheelhouse/ (see the top of this script)" >&2; exit 2; }

export VIDEOMINI_CUDA_SUMMARY="$SUMMARY.tests"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
started=$(date +%s)
set +e
timeout 480 "$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider --junitxml="$SUMMARY.junit.xml"
status=$?
set -e
"$PYTHON" - "$SUMMARY" "$status" "$(( $(date +%s) - started ))" <<'PY'
import json, sys
from pathlib import Path
import xml.etree.ElementTree as ET

out, status, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
figures = Path(str(out) + ".tests")
junit = Path(str(out) + ".junit.xml")
tests = {}
if junit.exists():
    for case in ET.parse(junit).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        tests[case.get("name")] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
summary = {"pytest_exit": status, "seconds": seconds, "tests": tests,
           "figures": json.loads(figures.read_text()) if figures.exists() else {}}
out.write_text(json.dumps(summary, indent=2))
print(f"gpu_check: {sum(v == 'passed' for v in tests.values())}/{len(tests)} passed in {seconds} s -> {out}")
PY
exit $status
