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
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_llm_config(**overrides):
    """A Llama config shaped like the golden one (hidden 64, 2 layers, 4 heads, 2 KV heads, vocab 408)."""
    from transformers import LlamaConfig

    cfg = dict(vocab_size=408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=400,
               eos_token_id=[401, 405, 404], tie_word_embeddings=False, rope_theta=500000.0,
               rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"})
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def make_tiny_checkpoint(folder: Path, *, compressor_size: int = 1, prefusion_layer_num: int = 2,
                         resolution_ratio: int = 1, projector: str = "mlp2x_gelu", image_size: int = 56,
                         with_clip_text: bool = False, seed: int = 0, max_shard_size: str | int = "5GB") -> Path:
    """Build a random LLaVA-Mini (tiny CLIP tower, tiny Llama) and save it in the official format with the golden
    tokenizer. `with_clip_text` saves a full CLIP (vision + text towers + projections) as the vision tower, so the
    same pass yields CLIP image embeddings and the question can be embedded by the text tower."""
    import shutil

    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    from videomini.loading import save_pretrained
    from videomini.model import LlavaMiniConfig, build_model

    torch.manual_seed(seed)
    vision = dict(hidden_size=1024, intermediate_size=64, num_hidden_layers=2, num_attention_heads=8,
                  image_size=image_size, patch_size=14, projection_dim=32, hidden_act="quick_gelu")
    folder = Path(folder)
    tower_dir = folder / "clip"
    if with_clip_text:
        text = dict(vocab_size=408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
                    bos_token_id=400, eos_token_id=401, pad_token_id=401)
        clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
        clip.save_pretrained(str(tower_dir))
        from transformers import CLIPVisionModelWithProjection

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the text tower's keys are expected to go unused here
        tower = CLIPVisionModelWithProjection.from_pretrained(str(tower_dir))
        hf_logging.set_verbosity_warning()
        for name in TOKENIZER_FILES:  # the text tower's tokenizer (the real CLIP folder has its own)
            shutil.copy(GOLDEN / "llavamini_tiny" / name, tower_dir / name)
    else:
        tower = CLIPVisionModel(CLIPVisionConfig(**vision))
        tower.save_pretrained(str(tower_dir))
    CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                          image_mean=[0.48145466, 0.4578275, 0.40821073],
                          image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(str(tower_dir))
    mm = LlavaMiniConfig(mm_vision_tower="clip", compressor_size=compressor_size,
                         prefusion_layer_num=prefusion_layer_num, resolution_ratio=resolution_ratio,
                         mm_projector_type=projector, tokenizer_model_max_length=4096)
    model = build_model(mm, tiny_llm_config(), vision_tower=tower)
    with torch.no_grad():  # random but non-trivial norms and biases, so that every weight matters
        for name, p in model.named_parameters():
            if not name.startswith("vision_tower.") and p.dim() == 1 and "pos_embed" not in name:
                p.add_(torch.randn_like(p) * 0.1)
    save_pretrained(model, folder, max_shard_size=max_shard_size, save_vision_tower=False)
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDEN / "llavamini_tiny" / name, folder / name)
    return folder


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
    from narrated import Caption, make_narrated_video

    from videomini.ask import VideoMini
    from videomini.pipelines.index_run import index_videos

    silent = make_narrated_video(tmp_path_factory.mktemp("media") / "silent.mp4", duration_s=4.0, lines=[],
                                 captions=[Caption(1.0, 3.0, "LOADING DOCK")], with_audio=False)
    library = tmp_path_factory.mktemp("serve") / "library"
    vm = VideoMini.from_pretrained(str(checkpoint), device="cpu")
    report = index_videos(library, [narrated.path, silent.path], vm, model_id=str(checkpoint),
                          signals=("speech", "ocr"))
    assert len(report.indexed) == 2, report.failed
    return library, {"narrated.mp4": narrated, "silent.mp4": silent}


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
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words,
                                               *"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]))
    BertTokenizerFast(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len((bert / "vocab.txt").read_text().split()), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)).save_pretrained(bert)
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
