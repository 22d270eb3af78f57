"""Offline signals: speech, on-screen text, text embeddings.

Each extractor turns a video (or its frames) into timestamped `TextSegment`s using models that ship inside pip
packages, so they run on a machine with no network. The heavy imports (faster-whisper, rapidocr,
sentence-transformers) happen only when an extractor is used: `import videomini.signals` stays cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from videomini.errors import VideominiError

__all__ = [
    "SignalError",
    "TextSegment",
    "TextEmbedder",
    "default_embedder",
    "bundled_minilm_path",
    "bundled_whisper_path",
    "ocr_video",
    "read_text",
    "transcribe",
]


class SignalError(VideominiError, RuntimeError):
    """An expected failure of an extractor (missing model package, unreadable file); the message is one line."""
    http_status = 503


@dataclass
class TextSegment:
    """Text heard or seen in a video between two times (seconds from the start of the file)."""

    start_s: float
    end_s: float
    text: str
    source: str  # "speech" | "ocr"
    words: list[tuple[float, float, str]] | None = None  # speech only: (start_s, end_s, word)
    score: float | None = None  # speech: mean word probability; ocr: mean box confidence

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.words is not None:
            out["words"] = [list(word) for word in self.words]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextSegment:
        words = data.get("words")
        return cls(
            start_s=float(data["start_s"]),
            end_s=float(data["end_s"]),
            text=str(data["text"]),
            source=str(data["source"]),
            words=[(float(s), float(e), str(w)) for s, e, w in words] if words is not None else None,
            score=None if data.get("score") is None else float(data["score"]),
        )


_LAZY = {
    "transcribe": "videomini.signals.speech",
    "bundled_whisper_path": "videomini.signals.speech",
    "read_text": "videomini.signals.ocr",
    "ocr_video": "videomini.signals.ocr",
    "TextEmbedder": "videomini.signals.text",
    "default_embedder": "videomini.signals.text",
    "bundled_minilm_path": "videomini.signals.text",
}


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing the package must not import the model libraries.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videomini.signals' has no attribute {name!r}")


def bundled_model_path(module: str, package: str, marker: str, label: str, hint: str) -> Path:
    """The model folder a pip package ships (`<module>.get_model_path()`), checked for its `marker` file."""
    import importlib

    try:
        shipped = importlib.import_module(module)
    except ImportError:
        raise SignalError(f"{label} is not installed (package {package}): {hint}") from None
    path = Path(shipped.get_model_path())
    if not (path / marker).is_file():
        raise SignalError(f"{path}: no {marker} in the {package} package; reinstall it: {hint}")
    return path
