"""The `search` job and `ask --library`: natural-language queries over an indexed library.

search: the ranking of `videomini.search` (frames by CLIP, speech and on-screen text by MiniLM, each calibrated
against the query's own background and fused by evidence), plus the job's policy: a thumbnail of each moment's
best frame when asked.
ask: retrieve the best moments across the library with that same ranking, re-decode their frames, fuse the
question with them and answer with LLaVA-Mini (stored speech / on-screen text near those frames quoted into the
prompt); the evidence (the LLM's attention to each frame token) cites (video, time). With no LLaVA-Mini model,
the stored signals answer (`videomini.evidence.answer_library_from_signals`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from videomini import search
from videomini.answer import Answer, Generator, attention_to_frames, moments_from_scores
from videomini.evidence import answer_library_from_signals
from videomini.library import Library, LibraryError
from videomini.prompting import encode_question
from videomini.search import SearchMoment


def search_library(library_dir: str | os.PathLike, query: str, top_k: int = 10, text_tower: Any = None,
                   thumbnails_dir: str | os.PathLike | None = None, gap_s: float | None = None,
                   text_embedder: Any = None, signals: Sequence[str] = search.SIGNALS,
                   notes: list[str] | None = None) -> list[SearchMoment]:
    """The `top_k` best moments for `query` (`videomini.search.search_library`), with each moment's best frame
    written to `thumbnails_dir` when one is given."""
    results = search.search_library(library_dir, query, top_k=top_k, text_tower=text_tower, gap_s=gap_s,
                                    text_embedder=text_embedder, signals=signals, notes=notes)
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
                max_frames: int = 64, max_new_tokens: int = 256, on_token: Any = None,
                quote_signals: bool = True) -> Answer:
    """Retrieve moments, re-decode their frames, answer with LLaVA-Mini, cite (video, time). Stored speech and
    on-screen text near the chosen frames go into the prompt as timestamped lines (`quote_signals`)."""
    from videomini.evidence import signal_context
    from videomini.signals import TextSegment
    from videomini.video import read_frames_at

    started = time.perf_counter()
    text_tower = vm.text_tower
    if text_tower is None:
        raise LibraryError(f"{library_dir}: the model has no CLIP text tower to retrieve moments with")
    notes: list[str] = []
    found = search_library(library_dir, question, top_k=top_k, text_tower=text_tower, notes=notes)
    if not found:
        raise LibraryError(f"{library_dir}: nothing indexed to answer from")
    per_moment = max(1, max_frames // len(found))
    chosen: dict[str, set[float]] = {}
    context_lines: list[str] = []
    with Library(library_dir) as library:
        rows = {m.video: library.video(m.video) for m in found}
        stored_times = {video: library.load_frames(row["id"]).timestamps_s for video, row in rows.items()
                        if row and row["n_frames"]}
        for moment in found:
            if moment.video not in stored_times:
                continue  # indexed without frames (signals only): its text is quoted, it gives no frames
            stored = stored_times[moment.video]
            inside = stored[(stored >= moment.start_s - 1e-6) & (stored <= moment.end_s + 1e-6)]
            if len(inside) == 0:  # a text moment between stored frames: the nearest frame
                inside = stored[[int(np.argmin(np.abs(stored - moment.best_s)))]]
            if len(inside) > per_moment:  # keep the best frame and spread the rest over the moment
                inside = np.unique(np.concatenate([[moment.best_s], inside[np.linspace(0, len(inside) - 1,
                                                                                       per_moment - 1).astype(int)]]))
            chosen.setdefault(moment.video, set()).update(float(t) for t in inside)
        if quote_signals:
            for video in dict.fromkeys(m.video for m in found):
                if not rows[video] or not rows[video]["signals"]:
                    continue
                segments = [TextSegment(d["start_s"], d["end_s"], d["text"], d["source"])
                            for d in library.segments(rows[video]["id"])]
                times = sorted(chosen.get(video) or [m.best_s for m in found if m.video == video])
                lines = signal_context(segments, times).splitlines()
                context_lines += [line.replace("[", f"[{Path(video).name} ", 1) for line in lines] if len(rows) > 1 \
                    else lines
    if not chosen:  # every moment found is in videos indexed without frames: their text is the evidence
        answer = answer_library_from_signals(library_dir, question, top_k=min(top_k, 3))
        answer.notes.insert(0, "The moments found have no stored frames (indexed with --no-visual).")
        return answer
    context = "\n".join(context_lines) or None
    input_ids = encode_question(vm.tokenizer, question, context).to(vm.model.device)
    tokens, videos, times, text_sum, count = [], [], [], None, 0
    for video in dict.fromkeys(m.video for m in found if m.video in chosen):  # in order of their best moment
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
    notes.append(f"retrieved {len(found)} moments from {len({m.video for m in found})} videos")
    return Answer(question=question, text="".join(pieces).strip(), evidence=evidence[:top_k],
                  frames_used=int(count), frames_total=int(count), frame_times_s=[round(float(t), 3) for t in all_times],
                  model=vm.model_id, notes=notes, context=context,
                  timings_s={"retrieve_encode": round(encoded_at - started, 3),
                             "generate": round(time.perf_counter() - encoded_at, 3),
                             "total": round(time.perf_counter() - started, 3)})
