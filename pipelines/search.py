"""`search` and `ask --library`: natural-language queries over an indexed library.

search: the query's CLIP text embedding against every stored frame embedding (FAISS), adjacent hits of a video
merged into moments (video, start, end, score, best frame), thumbnails on request.
ask: retrieve the best moments across the library, re-decode their frames, fuse the question with them and
answer with LLaVA-Mini; the evidence (the LLM's attention to each frame token) cites (video, time).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomini.answer import Answer, Generator, attention_to_frames, moments_from_scores
from videomini.library import Library, LibraryError, moments
from videomini.prompting import encode_question


@dataclass
class SearchMoment:
    video: str
    start_s: float
    end_s: float
    score: float
    best_s: float
    thumbnail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def library_model_id(library: Library) -> str:
    """The model the library was indexed with (one model per library)."""
    ids = {v["model_id"] for v in library.videos("done") if v.get("model_id")}
    if not ids:
        raise LibraryError(f"{library.root}: no indexed videos yet (run `videomini index ... --library {library.root}`)")
    if len(ids) > 1:
        raise LibraryError(f"{library.root}: indexed with several models ({', '.join(sorted(ids))}); re-index with one")
    return ids.pop()


def text_tower_for(model_id: str, device: str | torch.device = "cpu") -> Any:
    """The CLIP text tower beside the checkpoint's vision tower — search needs only that, not the LLM."""
    from videomini.loading import CheckpointError, read_config, resolve_checkpoint, resolve_vision_tower
    from videomini.retrieval import load_text_tower

    folder = resolve_checkpoint(model_id)
    tower = resolve_vision_tower(read_config(folder)["mm_vision_tower"], folder)
    text_tower = load_text_tower(tower, device)
    if text_tower is None:
        raise CheckpointError(f"{tower}: the vision tower has no CLIP text tower, so text search is not possible")
    return text_tower


def search_library(library_dir: str | os.PathLike, query: str, top_k: int = 10, text_tower: Any = None,
                   thumbnails_dir: str | os.PathLike | None = None, gap_s: float | None = None) -> list[SearchMoment]:
    """The `top_k` best moments for `query`, best first."""
    with Library(library_dir) as library:
        text_tower = text_tower or text_tower_for(library_model_id(library))
        query_embedding = text_tower.embed(query)[0].numpy()
        hits = library.search_vectors(query_embedding, top_k=top_k * 8)
        fps = max((v.get("fps") or 1.0) for v in library.videos("done"))
        found = moments(hits, gap_s=gap_s if gap_s is not None else 1.5 / fps)[:top_k]
    results = [SearchMoment(m.path, float(m.start_s), float(m.end_s + 1.0 / fps), round(float(m.score), 4),
                            float(m.best_s)) for m in found]
    if thumbnails_dir is not None:
        write_thumbnails(results, Path(thumbnails_dir))
    return results


def write_thumbnails(results: list[SearchMoment], folder: Path, max_side: int = 320) -> None:
    from PIL import Image

    from videomini.video import VideoError, read_frames_at

    folder.mkdir(parents=True, exist_ok=True)
    for rank, moment in enumerate(results, 1):
        try:
            frames, _ = read_frames_at(moment.video, [moment.best_s], max_side=max_side)
        except (VideoError, ValueError):
            continue  # the file moved or changed since indexing: the moment is still reported
        target = folder / f"{rank:02d}-{Path(moment.video).stem}-{moment.best_s:08.2f}s.jpg"
        Image.fromarray(frames[0]).save(target, quality=90)
        moment.thumbnail = str(target)


def ask_library(vm: Any, library_dir: str | os.PathLike, question: str, top_k: int = 10,
                max_frames: int = 64, max_new_tokens: int = 256, on_token: Any = None) -> Answer:
    """Retrieve moments, re-decode their frames, answer with LLaVA-Mini, cite (video, time)."""
    from videomini.video import read_frames_at

    started = time.perf_counter()
    text_tower = vm.text_tower
    if text_tower is None:
        raise LibraryError(f"{library_dir}: the model has no CLIP text tower to retrieve moments with")
    found = search_library(library_dir, question, top_k=top_k, text_tower=text_tower)
    if not found:
        raise LibraryError(f"{library_dir}: nothing indexed to answer from")
    input_ids = encode_question(vm.tokenizer, question).to(vm.model.device)
    per_moment = max(1, max_frames // len(found))
    chosen: dict[str, set[float]] = {}
    with Library(library_dir) as library:
        for moment in found:
            stored = library.load_frames(library.video(moment.video)["id"]).timestamps_s
            inside = stored[(stored >= moment.start_s - 1e-6) & (stored <= moment.end_s + 1e-6)]
            if len(inside) > per_moment:  # keep the best frame and spread the rest over the moment
                inside = np.unique(np.concatenate([[moment.best_s], inside[np.linspace(0, len(inside) - 1,
                                                                                       per_moment - 1).astype(int)]]))
            chosen.setdefault(moment.video, set()).update(float(t) for t in inside)
    tokens, videos, times, text_sum, count = [], [], [], None, 0
    for video in dict.fromkeys(m.video for m in found):  # videos in order of their best moment
        wanted = np.array(sorted(chosen[video]))
        frames, frame_times = read_frames_at(video, wanted)
        for start in range(0, len(frames), vm.encoder.batch_size):
            encoded = vm.encoder.encode(frames[start: start + vm.encoder.batch_size],
                                        frame_times[start: start + vm.encoder.batch_size], input_ids)
            tokens.append(encoded.frame_tokens)
            text_sum = encoded.fused_text_sum if text_sum is None else text_sum + encoded.fused_text_sum
            count += len(encoded.timestamps_s)
        videos += [video] * len(frame_times)
        times.append(frame_times)
    encoded_at = time.perf_counter()
    frame_tokens = torch.cat(tokens).to(vm.model.device)
    fused_text = (text_sum / count).to(vm.model.device, vm.model.dtype)
    inputs_embeds = vm.model.build_inputs_embeds(input_ids, fused_text, frame_tokens)
    generator = Generator(vm.model, vm.tokenizer)
    pieces = []
    for piece in generator.stream(inputs_embeds, max_new_tokens=max_new_tokens):
        pieces.append(piece)
        if on_token:
            on_token(piece)
    slot = int((input_ids[0] == -200).nonzero()[0])
    n_tokens = frame_tokens.shape[0] * frame_tokens.shape[1]
    scores = attention_to_frames(vm.model.llm, generator.result.get("layer_inputs", [[]]), generator.result.get("cache"),
                                 inputs_embeds.shape[1], slice(slot, slot + n_tokens), frame_tokens.shape[1])
    all_times = np.concatenate(times)
    video_of = np.array(videos)
    evidence = []
    for video in dict.fromkeys(videos):
        mask = video_of == video
        evidence += moments_from_scores(all_times[mask], scores[mask], 3, "attention", 1.0, video=video,
                                        peak=float(scores.max()) or 1.0)
    evidence.sort(key=lambda e: -e.score)
    return Answer(question=question, text="".join(pieces).strip(), evidence=evidence[:top_k],
                  frames_used=int(count), frames_total=int(count), frame_times_s=[round(float(t), 3) for t in all_times],
                  model=vm.model_id, notes=[f"retrieved {len(found)} moments from {len(chosen)} videos"],
                  timings_s={"retrieve_encode": round(encoded_at - started, 3),
                             "generate": round(time.perf_counter() - encoded_at, 3),
                             "total": round(time.perf_counter() - started, 3)})
