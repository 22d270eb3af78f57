"""Official LLaVA-Mini checkpoints (local folders or hub ids) -> LlavaMini, tokenizer, image processor.

An official checkpoint folder holds `config.json` (`model_type` `llava_mini_llama`, the Llama keys and the
`mm_*` keys), the weights as one `model.safetensors` or shards + `model.safetensors.index.json`, a tokenizer,
and names its vision tower in `mm_vision_tower` (a hub id such as `openai/clip-vit-large-patch14-336`, or a
path). Weights are read with safetensors only (never pickle) and no remote code runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

from videomini.errors import CheckpointError, InvalidInput, first_line  # CheckpointError: re-exported

MODEL_TYPE = "llava_mini_llama"
DEFAULT_MODEL_ID = "ICTNLP/llava-mini-llama-3.1-8b"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
# Key prefixes of the official state dict -> our modules. The checkpoint's copy of the vision tower is ignored
# (the official loader loads the tower from `mm_vision_tower`), as are rotary caches of old exports.
_PREFIX_MAP = (("model.mm_projector.", "mm_projector."), ("model.compressor.", "compressor."),
               ("model.prefusion_layers.", "prefusion_layers."), ("model.", "llm.model."),
               ("lm_head.", "llm.lm_head."))
_IGNORED_PREFIXES = ("model.vision_tower.",)

_LLAMA_31_8B = {
    "architectures": ["LlavaMiniLlamaForCausalLM"], "model_type": "llava_mini_llama",
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
    "mlp_bias": False, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "compressor_size": 1, "prefusion_layer_num": 4, "resolution_ratio": 1, "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "square",
    "tokenizer_model_max_length": 4096, "torch_dtype": "bfloat16",
}
# Built in so that `videomini plan` works with no files and no network.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {DEFAULT_MODEL_ID: _LLAMA_31_8B}
_CLIP_L_336 = {
    "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05, "num_channels": 3,
}
# The hub checkpoint is a full CLIP: its image projection (1024 → 768) gives the retrieval embedding.
KNOWN_VISION_CONFIGS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {**_CLIP_L_336, "_with_projection": True},
}
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"



class LoadedModel(NamedTuple):
    model: Any  # videomini.model.LlavaMini
    tokenizer: Any
    image_processor: Any


def default_model_id() -> str:
    """The model used when none is named: $VIDEOMINI_MODEL, else the released LLaVA-Mini."""
    return os.environ.get("VIDEOMINI_MODEL") or DEFAULT_MODEL_ID


class LazyModel:
    """A model loaded only when first used (an index re-run with nothing to encode loads nothing). Its id is
    known without loading, so a run can plan, and an engine that loads elsewhere (Ray) can pass it on."""

    def __init__(self, load: Callable[[], Any], model_id: str) -> None:
        self._load = load
        self.model_id = model_id

    def __getattr__(self, name: str) -> Any:  # only for names not set above: the loaded model's
        return getattr(self._load(), name)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (as released), float32 on CPU (bf16 matmuls are slow and inexact there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if dtype not in names:
        raise CheckpointError(f"unknown dtype {dtype!r} (use bf16, fp16 or fp32)")
    return names[dtype]


# ---------------------------------------------------------------------------------------------------------
# Resolving a model id or path to a local folder
# ---------------------------------------------------------------------------------------------------------


def _read_json(path: Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A JSON object from `path`; a malformed file raises `error` with one line naming it."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a JSON object")
    return data


def _cached_hub_config(repo_id: str) -> Path | None:
    """config.json of a hub id when it is already in the Hugging Face cache (never downloads)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an invalid repo id, an unreadable cache: simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def find_config(model: str | os.PathLike | dict[str, Any]) -> tuple[dict[str, Any], str, Path | None]:
    """(config, name, folder) without loading or downloading anything: a dict as is; a checkpoint folder or its
    config.json; a known id (built in); a hub id already in the Hugging Face cache. ValueError otherwise."""
    if isinstance(model, dict):
        return copy.deepcopy(model), str(model.get("_name_or_path", "config")), None
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: no config.json (not a LLaVA-Mini checkpoint folder)")
        return _read_json(path / "config.json"), name, path
    if path.is_file():
        return _read_json(path), name, path.parent
    if name in KNOWN_CONFIGS:
        return copy.deepcopy(KNOWN_CONFIGS[name]), name, None
    cached = _cached_hub_config(name)
    if cached is not None:
        return _read_json(cached), name, cached.parent
    raise ValueError(f"{name}: not a checkpoint folder, a config.json, a model in the Hugging Face cache or a "
                     f"known model id; pass a local checkpoint folder or one of: {', '.join(KNOWN_CONFIGS)}")


def find_vision_config(tower: str | None, folder: Path | None) -> tuple[dict[str, Any], str]:
    """(config, source) of the vision tower named by `mm_vision_tower`, never downloading: relative to the
    checkpoint folder, as a path, a known id, a cached hub id; else CLIP ViT-L/14-336 with source ""."""
    tower = tower or DEFAULT_VISION_TOWER
    candidates = ([folder / tower] if folder is not None else []) + [Path(tower).expanduser()]
    for candidate in candidates:
        config_path = candidate / "config.json" if candidate.is_dir() else candidate
        if config_path.is_file() and config_path.suffix == ".json":
            return _read_json(config_path), str(candidate)
    if tower in KNOWN_VISION_CONFIGS:
        return copy.deepcopy(KNOWN_VISION_CONFIGS[tower]), tower
    cached = _cached_hub_config(tower)
    if cached is not None:
        return _read_json(cached), tower
    return copy.deepcopy(KNOWN_VISION_CONFIGS[DEFAULT_VISION_TOWER]), ""


def llm_config_from(config: dict[str, Any]) -> Any:
    """The Llama keys of a LLaVA-Mini config.json -> LlamaConfig (SDPA attention), as the model is built."""
    from transformers import LlamaConfig

    llm_config = LlamaConfig(**{k: v for k, v in config.items()
                                if k not in ("architectures", "model_type") and not k.startswith("_")})
    llm_config._attn_implementation = "sdpa"
    return llm_config


def resolve_checkpoint(id_or_path: str | os.PathLike, what: str = "model") -> Path:
    """A local folder, else a hub id through huggingface_hub's cache (downloaded when the hub is reachable)."""
    name = os.fspath(id_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{name}: not a folder (a {what} checkpoint is a folder with config.json)")
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"{name}: {what} folder not found")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    fix = (f"download it where the hub is reachable (`hf download {name}`) and copy the Hugging Face cache "
           f"(HF_HOME), or pass a local folder (--model PATH or VIDEOMINI_MODEL=PATH)")
    if offline:
        raise CheckpointError(f"{name}: {what} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: {fix}")
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise CheckpointError(f"{name}: {what} is not cached and the hub is unreachable ({first_line(e)[:120]}): "
                              f"{fix}") from None


def read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no config.json (not a LLaVA-Mini checkpoint folder)")
    config = _read_json(config_path, CheckpointError)
    if config.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{folder}: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    return config


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files: shards named by the index json, or the single file."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({folder / shard for shard in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shards named in {INDEX_FILE} are missing: {', '.join(missing)}")
        return files
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise CheckpointError(f"{folder}: only pickle weights (.bin/.pt) found; videomini loads safetensors only")
    raise CheckpointError(f"{folder}: no {WEIGHTS_FILE} or {INDEX_FILE}")


def _map_key(key: str) -> str | None:
    if key.startswith(_IGNORED_PREFIXES) or key.endswith("rotary_emb.inv_freq"):
        return None
    for old, new in _PREFIX_MAP:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def resolve_vision_tower(name: str, checkpoint: Path, override: str | os.PathLike | None = None) -> Path:
    """`mm_vision_tower`: relative to the checkpoint folder, then as a path, then as a hub id; or the override."""
    if override is not None:
        return resolve_checkpoint(override, what="vision tower")
    for candidate in (checkpoint / name, Path(name).expanduser()):
        if candidate.is_dir():
            return candidate.resolve()
    return resolve_checkpoint(name, what="vision tower")


def has_weights(folder: str | os.PathLike, prefix: str) -> bool:
    """Whether a checkpoint folder holds a tensor whose name starts with `prefix` (read from safetensors headers)."""
    folder = Path(folder)
    try:
        files = [folder / WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else weight_files(folder)
    except CheckpointError:
        return False
    for file in files:
        with safe_open(str(file), "pt") as f:
            if any(k.startswith(prefix) for k in f.keys()):
                return True
    return False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Load with transformers silent -- no "Loading weights" bar, no notice about checkpoint keys a model leaves
    unused on purpose (a full CLIP checkpoint holds both towers) -- then restore its settings."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_vision_tower(tower: Path, dtype: torch.dtype, device: torch.device) -> tuple[nn.Module, Any]:
    """CLIP vision tower + its image processor. A full CLIP checkpoint (with `visual_projection`) is loaded
    with the projection so that the same pass yields the CLIP image embedding used for retrieval."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel, CLIPVisionModelWithProjection

    cls = CLIPVisionModelWithProjection if has_weights(tower, "visual_projection.") else CLIPVisionModel
    try:
        with quiet_transformers():  # a full CLIP checkpoint's text-tower keys are expected to go unused
            model = cls.from_pretrained(str(tower), dtype=dtype, use_safetensors=True, attn_implementation="sdpa")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{tower}: cannot load the CLIP vision tower ({first_line(e)[:160]})") from None
    # PIL backend named explicitly: bit-identical to the reference, and an installed torchvision cannot switch it
    try:
        processor = CLIPImageProcessorPil.from_pretrained(str(tower))
    except OSError:
        raise CheckpointError(f"{tower}: no preprocessor_config.json for the CLIP image processor") from None
    return model.to(device).eval(), processor


QUANTIZE_MODES = ("int8", "nf4")


def llm_quantization_config(quantize: str, device: torch.device, dtype: torch.dtype) -> Any:
    """transformers' quantization config for the LLM: bitsandbytes on CUDA (8-bit as the official --load-8bit, or
    4-bit NF4), torchao int8 weight-only on the CPU. The vision tower, compressor, projector and pre-fusion stay
    in the compute dtype."""
    from videomini.backends import enable

    enable()  # the CLI keeps the quantization libraries out until an option needs them
    if quantize not in QUANTIZE_MODES:
        raise InvalidInput(f"--quantize: unknown quantization {quantize!r} (use {' or '.join(QUANTIZE_MODES)})")
    if device.type == "cuda":
        from transformers import BitsAndBytesConfig

        if quantize == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    if quantize == "nf4":
        raise InvalidInput("--quantize nf4 needs a CUDA device (bitsandbytes); on the CPU use --quantize int8")
    try:
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError:
        raise CheckpointError("--quantize int8 on the CPU needs torchao (pip install 'videomini[quant]')") from None
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


def _load_llm(folder: Path, llm_config: Any, dtype: torch.dtype, device: torch.device, quantize: str) -> nn.Module:
    """The LLM's weights (the official checkpoint's `model.*` and `lm_head.*` are LlamaForCausalLM's own names)
    through transformers' from_pretrained, quantized on load; the multimodal keys are left for `load_model`."""
    from transformers import LlamaForCausalLM

    quantization_config = llm_quantization_config(quantize, device, dtype)
    try:
        with quiet_transformers():  # the multimodal keys are expected to go unused here
            return LlamaForCausalLM.from_pretrained(str(folder), config=llm_config, dtype=dtype,
                                                    use_safetensors=True, quantization_config=quantization_config,
                                                    device_map={"": device}).eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: cannot load the LLM with --quantize {quantize} "
                              f"({first_line(e)[:160]})") from None


def _read_state(folder: Path, expected: set[str], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        for key, tensor in load_file(str(file), device="cpu").items():
            mapped = _map_key(key)
            if mapped is not None and mapped in expected:
                # copy=True: own, aligned memory rather than a view into the mapped file (whose offsets change
                # CPU matmul results in the last bit, and which must not change under a loaded model)
                state[mapped] = tensor.to(device=device, dtype=dtype, copy=True)
    return state


def load_model(id_or_path: str | os.PathLike = DEFAULT_MODEL_ID, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, vision_tower: str | os.PathLike | None = None,
               quantize: str | None = None) -> LoadedModel:
    """Load an official LLaVA-Mini checkpoint -> (model, tokenizer, image_processor).

    `device` defaults to CUDA when present, else CPU; `dtype` to bf16 on CUDA and float32 on CPU (weights stored in
    bf16 are upcast). `vision_tower` overrides the checkpoint's `mm_vision_tower`. `quantize` ("int8", "nf4")
    quantizes the LLM's weights on load (`llm_quantization_config`).
    """
    from transformers import GenerationConfig, PreTrainedTokenizerFast
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from videomini.model import LlavaMini, LlavaMiniConfig, sincos_pos_embed_2d

    device = torch.device(device) if device is not None else default_device()
    dtype = parse_dtype(dtype, device)
    folder = resolve_checkpoint(id_or_path)
    config = read_config(folder)
    mm_config, llm_config = LlavaMiniConfig.from_dict(config), llm_config_from(config)
    tower_path = resolve_vision_tower(mm_config.mm_vision_tower, folder, vision_tower)
    tower, image_processor = load_vision_tower(tower_path, dtype, device)
    with torch.device("meta"):
        model = LlavaMini(mm_config, llm_config, vision_tower=nn.Identity())
    model.vision_tower = tower
    skip = ("vision_tower.", "llm.") if quantize else ("vision_tower.",)
    expected = {k for k in model.state_dict() if not k.startswith(skip)}
    state = _read_state(folder, expected, device, dtype)
    if "compressor.pos_embed" not in state:  # fixed sin-cos table: derivable when an export drops it
        state["compressor.pos_embed"] = torch.from_numpy(
            sincos_pos_embed_2d(mm_config.mm_hidden_size, mm_config.compressor_size)).to(device, dtype)
    if "llm.lm_head.weight" not in state and llm_config.tie_word_embeddings and not quantize:
        state["llm.lm_head.weight"] = state.get("llm.model.embed_tokens.weight")
    missing = sorted(expected - state.keys())
    if missing:
        shown = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
        raise CheckpointError(f"{folder}: weights missing from the checkpoint: {shown}")
    model.load_state_dict(state, strict=False, assign=True)
    if quantize:
        model.llm = _load_llm(folder, llm_config, dtype, device, quantize)
    # non-persistent buffers (RoPE inverse frequencies) were created on meta: build them on the device
    with torch.device(device):
        model.prefusion_rotary = LlamaRotaryEmbedding(config=llm_config)
        model.llm.model.rotary_emb = LlamaRotaryEmbedding(config=llm_config)
    for name, part in model.named_children():
        if name != "llm" or not quantize:  # a bitsandbytes model is placed by from_pretrained and refuses .to()
            part.to(device)
    if (folder / "generation_config.json").is_file():
        model.llm.generation_config = GenerationConfig.from_pretrained(str(folder))
    model.name_or_path, model.checkpoint_dir, model.vision_tower_dir = os.fspath(id_or_path), folder, tower_path
    model.quantize = quantize
    model.eval()
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: cannot load the tokenizer ({first_line(e)[:160]})") from None
    return LoadedModel(model, tokenizer, image_processor)


def save_pretrained(model: Any, folder: str | os.PathLike, tokenizer: Any = None, image_processor: Any = None,
                    max_shard_size: str | int = "5GB", dtype: torch.dtype | None = torch.bfloat16,
                    save_vision_tower: bool = True) -> Path:
    """Write `model` in the official format: config.json + (sharded) safetensors (+ tokenizer, vision tower).

    The vision tower goes to `<folder>/vision_tower` and `mm_vision_tower` names it relatively, unless
    `save_vision_tower` is False (then `mm_vision_tower` keeps the configured id or path).
    """
    from dataclasses import asdict

    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mm = asdict(model.config)
    if save_vision_tower:
        model.vision_tower.save_pretrained(str(folder / "vision_tower"), safe_serialization=True)
        source = getattr(model, "vision_tower_dir", None)
        if image_processor is not None:
            image_processor.save_pretrained(str(folder / "vision_tower"))
        elif source is not None and (Path(source) / "preprocessor_config.json").is_file():
            shutil.copy(Path(source) / "preprocessor_config.json", folder / "vision_tower")
        mm["mm_vision_tower"] = "vision_tower"
    config = model.llm_config.to_dict()
    config.update({k: v for k, v in mm.items() if v is not None})
    config.update(model_type=MODEL_TYPE, architectures=["LlavaMiniLlamaForCausalLM"], use_mm_proj=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    inverse = [(new, old) for old, new in _PREFIX_MAP]
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower.") or key.endswith("rotary_emb.inv_freq") or key.startswith("prefusion_rotary"):
            continue
        for new, old in inverse:
            if key.startswith(new):
                state[old + key[len(new):]] = tensor.detach().to(dtype) if dtype else tensor.detach()
                break
    save_torch_state_dict(state, str(folder), max_shard_size=max_shard_size)
    model.llm.generation_config.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder
