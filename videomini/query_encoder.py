"""Query encoders as ONNX graphs, so that `search` embeds its query without torch or transformers.

A search spends milliseconds ranking, but importing transformers' modelling costs about 3 s of a 2-core machine's
start-up and torch alone 1.2 s, so a command that loads a text model the usual way cannot answer in under 2.5 s.
Each text encoder a search needs — the sentence embedder of speech and on-screen text, the CLIP text tower of the
frames — is therefore exported once, with torch.onnx, as one graph: (input ids, attention mask) → the unit-length
embedding, pooling and projection included. Its fast tokenizer (tokenizer.json) is saved beside it. A search loads
both with onnxruntime and tokenizers (0.1 s of imports); the vectors agree with the torch path's to ~1e-7.

Where: one folder per model under the user's cache (`$VIDEOMINI_CACHE`, else `$XDG_CACHE_HOME/videomini`, else
~/.cache/videomini), `query-encoders/<kind>-<hash of the model's name>/`, shared by every library. Each holds the
model's source folder and the size and mtime of its files; a changed model reads as absent and is exported again.
When: `index` exports what its library's search will need; a search that had to load a model the slow way exports
it for the next one. Export is best-effort: an architecture torch.onnx cannot trace, a read-only or full cache,
leaves the torch path in use, never fails the command. Which encoder a search uses: `videomini.search_encoders`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bumped when what a folder holds changes; older folders read as absent
KINDS = ("sentence", "clip")  # sentence: speech and on-screen text (MiniLM); clip: the frames' text tower
MAX_FINGERPRINT_FILES = 500  # a model folder's files stat-ed to notice a changed model (a hub snapshot: ~10)
BATCH = 64  # texts per onnxruntime call


def cache_root() -> Path:
    """The folder that holds the exported encoders (created on first export)."""
    base = os.environ.get("VIDEOMINI_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
                                                        ) / "videomini"
    return Path(base).expanduser() / "query-encoders"


def entry_folder(kind: str, name: str) -> Path:
    """The folder of one model's encoder: its kind and a hash of the name the library records for it."""
    if kind not in KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
    return cache_root() / f"{kind}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def fingerprint(source: Path) -> list[list]:
    """[relative path, size, mtime_ns] of the files in the model's folder and its subfolders (one level): a model
    replaced in place changes some of them."""
    rows = []
    for path in sorted(source.glob("*")) + sorted(source.glob("*/*")):
        if len(rows) >= MAX_FINGERPRINT_FILES:
            break
        if path.is_file():
            stat = path.stat()
            rows.append([path.relative_to(source).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


class OnnxTextEncoder:
    """An exported encoder: texts → (N, dim) float32 rows of unit length, as the torch model it came from."""

    def __init__(self, folder: Path, meta: dict[str, Any]):
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are noise on a terminal
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(meta["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=str(meta["pad_token"]))
        self.lower = bool(meta.get("lower"))
        self.dim = int(meta["dim"])
        self.name = str(meta["name"])  # the name the library records for the model
        self.label = self.name  # as TextEmbedder's: the name a library records for its text model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, each row of unit length; an empty list gives a (0, dim) array."""
        if isinstance(texts, str):
            raise TypeError("OnnxTextEncoder.encode takes a list of strings, not one string")
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), BATCH):
            chunk = [t.lower() if self.lower else t for t in texts[start:start + BATCH]]
            encodings = self.tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            out.append(self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0].astype(np.float32))
        return np.ascontiguousarray(np.concatenate(out))


def current_meta(kind: str, name: str) -> dict[str, Any] | None:
    """The meta.json of `name`'s export when it is current (this format, and its model's files unchanged), else
    None. Reads one small file and stats the model's; builds no session."""
    try:
        meta = json.loads((entry_folder(kind, name) / "meta.json").read_text())
        if meta.get("format") != FORMAT or meta.get("name") != name:
            return None
        return meta if fingerprint(Path(meta["source"])) == meta["fingerprint"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached(kind: str, name: str) -> OnnxTextEncoder | None:
    """The exported encoder of `name`, or None when there is none, it is stale (the model's files changed) or
    it cannot be read — the caller then takes the torch path. Imports neither torch nor transformers."""
    meta = current_meta(kind, name)
    if meta is None:
        return None
    try:
        return OnnxTextEncoder(entry_folder(kind, name), meta)
    except Exception as exc:  # onnxruntime's own errors (a damaged graph): the torch path still works
        log.debug("query encoder %s of %s unreadable: %s", kind, name, exc)
        return None


def export(kind: str, name: str, source: Path, module: Any, tokenizer: Any, max_length: int,
           lower: bool = False) -> bool:
    """Export `module` — forward(input_ids, attention_mask) → (B, D) unit rows — with `tokenizer` (a transformers
    fast tokenizer) into the cache as `name`'s encoder; True when a current one is there afterwards."""
    if current_meta(kind, name) is not None:
        return True
    folder = entry_folder(kind, name)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            dim = _export_graph(module, tokenizer, staging / "model.onnx")
            tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
            pad_token = tokenizer.pad_token  # TextTower and sentence-transformers both set one
            meta = {"format": FORMAT, "name": name, "kind": kind, "source": str(source),
                    "fingerprint": fingerprint(source), "max_length": int(max_length), "lower": lower, "dim": dim,
                    "pad_token": str(pad_token), "pad_id": int(tokenizer.convert_tokens_to_ids(pad_token))}
            (staging / "meta.json").write_text(json.dumps(meta))
            shutil.rmtree(folder, ignore_errors=True)  # a stale export of the same name
            os.replace(staging, folder)  # whole or not at all; a concurrent export of the same model may win
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:  # best-effort: the torch path stays in use
        log.debug("cannot export the %s encoder of %s: %s", kind, name, exc)
    return current_meta(kind, name) is not None


def unit_embedding_module(model: Any, embed: Callable[[Any, Any, Any], Any]) -> Any:
    """A torch module for `export`: forward(input_ids, attention_mask) = normalize(embed(model, ids, mask))."""
    import torch

    class UnitEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(embed(self.model, input_ids, attention_mask).float(), dim=-1)

    return UnitEmbedding().eval()


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """transformers' eager attention while tracing (its SDPA mask builders do not trace with dynamic shapes);
    the model's own choice is restored after."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def model_folder(name: str | os.PathLike) -> Path:
    """The local folder of a model given as a folder or a hub id (its cached snapshot), for the fingerprint."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception:  # not in the hub cache: the fingerprint is empty and the name alone keys the export
        return path


def _export_graph(module: Any, tokenizer: Any, path: Path) -> int:
    """Trace `module` on a padded batch of two texts, batch and sequence axes dynamic; returns the embedding's
    width."""
    import torch

    sample = tokenizer(["a query", "a longer query about a moment of a video"], padding=True, return_tensors="pt")
    device = next(module.parameters()).device  # traced where the model is; the graph itself is device-free
    args = (sample["input_ids"].to(device), sample["attention_mask"].to(device))
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values are about shapes it keeps dynamic
        width = int(module(*args).shape[-1])
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17)
    return width
