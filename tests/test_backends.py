"""The console script hides the quantization libraries from transformers until an option needs them
(videomini/backends.py); the option must then work as if they had never been hidden."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter, as the console script runs: defer, load the model stack, then ask for each cache.
SCRIPT = """
import sys, torch
from videomini import backends
backends.defer()
from videomini import load_model
from videomini.generation import new_cache, prefill
model, _, _ = load_model(sys.argv[1], device="cpu", dtype="fp32")
assert all(sys.modules.get(name) is None for name in backends.QUANTIZATION_PACKAGES), "imported before asked"
embeds = torch.randn(1, 513, model.hidden_size) * 0.02
for kv_cache in ("int8", "int4"):
    cache = prefill(model, embeds, new_cache(model, kv_cache), chunk_tokens=256)
    print(kv_cache, type(cache).__name__, sorted(n for n in ("hqq", "optimum") if sys.modules.get(n) is not None))
"""


def test_deferred_backends_work_once_an_option_asks_for_them(golden_dir):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(golden_dir / "llavamini_tiny")], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["int8 QuantizedCache ['hqq']", "int4 QuantizedCache ['hqq', 'optimum']"]
