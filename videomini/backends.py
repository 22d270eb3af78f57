"""Optional quantization backends, imported only by the options that use them.

transformers imports every quantization library it finds installed as soon as its modelling or cache modules load
(HQQ from `cache_utils`, torchao from its quantizer, bitsandbytes from its integration): about 3 s of a command's
start-up here, paid by `search` and by every `ask` without `--quantize` / `--kv-cache`. The CLI calls `defer()`
before anything imports transformers: the libraries read as absent (`sys.modules[name] = None`, which
`importlib.util.find_spec` reports as not installed). `enable()` — called where `--quantize` or `--kv-cache` is
honoured — undoes it, re-runs transformers' availability checks and binds what its modules import conditionally.
A program that imports videomini as a library never calls `defer()`, so nothing changes for it.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["QUANTIZATION_PACKAGES", "defer", "enable"]

# What transformers probes and imports eagerly when installed: HQQ (--kv-cache int8), quanto through optimum
# (--kv-cache int4), torchao (--quantize int8 on the CPU), bitsandbytes (--quantize on CUDA).
QUANTIZATION_PACKAGES = ("hqq", "optimum", "torchao", "bitsandbytes")
# transformers' modules whose top level imports a backend under `if is_<backend>_available():`; re-run on enable
# (importlib.reload keeps each module object, so the classes already handed out see the new names)
_CONDITIONAL_MODULES = ("transformers.quantizers.quantizer_torchao", "transformers.integrations.torchao",
                        "transformers.integrations.bitsandbytes")

_deferred: set[str] = set()


def defer() -> None:
    """Hide the quantization libraries from transformers until `enable()`; no-op once transformers is imported
    (its checks have run) or for a library already imported."""
    if "transformers" in sys.modules:
        return
    for name in QUANTIZATION_PACKAGES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # find_spec -> None, import -> ImportError
            _deferred.add(name)


def enable() -> None:
    """Make the quantization libraries importable again and let transformers see them."""
    if not _deferred:
        return
    for name in list(_deferred):
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
    _deferred.clear()
    if "transformers" not in sys.modules:
        return
    import_utils = importlib.import_module("transformers.utils.import_utils")
    for attr, value in vars(import_utils).items():  # availability answers were cached as False
        if attr.startswith("is_") and callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    cache_utils = sys.modules.get("transformers.cache_utils")
    if cache_utils is not None and import_utils.is_hqq_available():
        from hqq.core.quantize import Quantizer

        cache_utils.HQQQuantizer = Quantizer  # bound at import under `if is_hqq_available():`
    for module in _CONDITIONAL_MODULES:
        if module in sys.modules:
            importlib.reload(sys.modules[module])
