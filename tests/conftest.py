"""Shared fixtures. Every test runs with HOME and the model caches inside a temporary folder (libraries
write into $HOME) and with the hub offline: models never download in tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDEOMINI_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
VIDEOS = SHARED / "videos"


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test module imports transformers / huggingface_hub, which read these at import time.
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="videomini-test-home-"))
    for var, sub in (("HOME", ""), ("HF_HOME", "hf"), ("XDG_CACHE_HOME", "cache"), ("TORCH_HOME", "torch"),
                     ("RAY_TMPDIR", "ray"), ("MPLCONFIGDIR", "mpl")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden reference not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    if not VIDEOS.is_dir():
        pytest.skip(f"real test clips not found at {VIDEOS}")
    return VIDEOS
