"""Shared fixtures. Every test runs with HOME and the model caches inside a temporary folder (libraries
write into $HOME) and with the hub offline: models never download in tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"  # the project's own test data (tests/data/README.md)
GOLDEN = DATA / "golden"
VIDEOS = DATA / "videos"


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test module imports transformers / huggingface_hub, which read these at import time.
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="videomini-test-home-"))
    for var, sub in (("HOME", ""), ("HF_HOME", "hf"), ("XDG_CACHE_HOME", "cache"), ("TORCH_HOME", "torch"),
                     ("RAY_TMPDIR", "ray"), ("MPLCONFIGDIR", "mpl")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ.pop("VIDEOMINI_CACHE", None)  # the query encoders go to XDG_CACHE_HOME above
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device: without one they are deselected (reported as such, never
    skipped); scripts/gpu_check.sh runs them on a GPU machine."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=marked)
    items[:] = [item for item in items if not item.get_closest_marker("cuda")]


@pytest.fixture(autouse=True)
def _library_logging_restored():
    """The CLI hides library log notices for the whole process (`logging.disable`, a one-line warning format);
    CliRunner tests run it in this process, so undo it after each test (pytest restores the warnings filters)."""
    import logging
    import warnings

    formatwarning = warnings.formatwarning
    yield
    logging.disable(logging.NOTSET)
    warnings.formatwarning = formatwarning


def _data_folder(folder: Path) -> Path:
    """A folder of tests/data; missing means a broken checkout, which fails the test rather than skipping it."""
    if not folder.is_dir():
        pytest.fail(f"test data missing: {folder} (it is part of the repository; restore it with git checkout)")
    return folder


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _data_folder(GOLDEN)


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _data_folder(VIDEOS)


# -------------------------------------------------------------------------------------------------------------
# Models: the golden tiny checkpoint, and tiny random checkpoints in the official format built in the tests
# -------------------------------------------------------------------------------------------------------------

# The tiny checkpoint builder is the library's own (`python -m videomini.tiny_checkpoint DIR`, in the README);
# tests import it from here as before.
from videomini.tiny_checkpoint import TOKENIZER_FILES, make_tiny_checkpoint, tiny_llm_config  # noqa: E402,F401


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random checkpoint whose vision tower is a full CLIP (projection + text tower): what `index` needs."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", with_clip_text=True)


@pytest.fixture(scope="module")
def vm(checkpoint):
    """`VideoMini` on the tiny checkpoint, CPU: what a served answer is compared with."""
    from videomini.ask import VideoMini

    return VideoMini.from_pretrained(str(checkpoint), device="cpu")


@pytest.fixture(scope="session")
def golden_model(golden_dir):
    """(model, tokenizer, image_processor) of the golden tiny checkpoint, float32 on CPU."""
    from videomini import load_model

    return load_model(golden_dir / "llavamini_tiny", device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def golden_cases(golden_dir):
    import json

    from safetensors.torch import load_file

    tensors = load_file(str(golden_dir / "cases.safetensors"))
    meta = json.loads((golden_dir / "cases_meta.json").read_text())
    return tensors, meta


@pytest.fixture(scope="session")
def narrated(tmp_path_factory):
    """The default narrated test video (tests/narrated.py): known sentences and captions at known times."""
    from narrated import make_narrated_video

    return make_narrated_video(tmp_path_factory.mktemp("media") / "narrated.mp4")


@pytest.fixture(scope="session")
def serve_library(tmp_path_factory, checkpoint, narrated):
    """A library for `videomini serve` tests: the narrated video (frames + speech + on-screen text) and a silent
    one with a caption, indexed with the tiny checkpoint. Returns (library folder, {name: NarratedVideo})."""
    from videomini.ask import VideoMini
    from videomini.pipelines import index_videos

    from narrated import Caption, make_narrated_video

    silent = make_narrated_video(tmp_path_factory.mktemp("media") / "silent.mp4", duration_s=4.0, lines=[],
                                 captions=[Caption(1.0, 3.0, "LOADING DOCK")], with_audio=False)
    library = tmp_path_factory.mktemp("serve") / "library"
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    report = index_videos(library, [narrated.path, silent.path], vm, model_id=str(checkpoint),
                          signals=("speech", "ocr"))
    assert len(report.indexed) == 2, report.failed
    return library, {"narrated.mp4": narrated, "silent.mp4": silent}


def assert_close(actual, expected, atol):
    """Same shape, and no element further than `atol` (the message says by how much)."""
    diff = (actual.float() - expected.float()).abs().max().item()
    assert actual.shape == expected.shape and diff <= atol, \
        f"max diff {diff:.3g} > {atol} (shape {tuple(actual.shape)})"


# -------------------------------------------------------------------------------------------------------------
# Tiny random speech / text models of the architectures `index --asr-model / --text-model` take
# -------------------------------------------------------------------------------------------------------------


def make_tiny_sentence_transformer(folder: Path) -> Path:
    """A sentence-transformers folder (BERT + mean pooling) with random weights and a small WordPiece vocabulary:
    the architecture of all-MiniLM-L6-v2 and of the larger embedders `--text-model` takes."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = "the a to of and in is it for on at by train budget meeting cat dog weather sunny noon london".split()
    bert = folder / "bert"
    bert.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *(f"##{c}" for c in letters)]
    (bert / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(bert)
    word = models.Transformer(str(bert), max_seq_length=64)
    SentenceTransformer(modules=[word, models.Pooling(32, "mean")], device="cpu").save(str(folder / "st"))
    return folder / "st"


def make_tiny_whisper(folder: Path) -> Path:
    """A CTranslate2 faster-whisper folder converted here from a random 1-layer Whisper (tiny.en's vocabulary and
    tokenizer, from the bundled model): the format `--asr-model` takes for a larger Whisper."""
    import shutil

    import ctranslate2
    import torch
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration

    from videomini.signals.speech import bundled_whisper_path

    bundled = bundled_whisper_path()
    hf = folder / "hf"
    torch.manual_seed(0)
    WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, decoder_start_token_id=50257,
        eos_token_id=50256, pad_token_id=50256, bos_token_id=50256)).save_pretrained(hf)
    PreTrainedTokenizerFast(tokenizer_file=str(bundled / "tokenizer.json")).save_pretrained(hf)
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(folder / "ct2"), force=True)
    shutil.copy(bundled / "tokenizer.json", folder / "ct2" / "tokenizer.json")
    return folder / "ct2"
