"""`videomini watch SOURCE`: ask about a live stream while it plays; standing questions as JSON lines on stdout;
the stream into a library in pieces (searchable while it runs)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from videomini import limits
from videomini.cli.common import fail
from videomini.cli.main import app


def _seconds(text: str, option: str) -> float:
    from videomini.live import parse_duration

    try:
        return parse_duration(text, option)
    except ValueError as e:
        fail(str(e))


def _signals(text: str) -> tuple[str, ...]:
    from videomini.live.signals import check_signals

    try:
        return check_signals(tuple(s.strip() for s in text.split(",") if s.strip()))
    except ValueError as e:
        fail(str(e))


def _printer(as_json: bool):
    """Events as one line each: alerts (and everything with --json) as JSON on stdout, notices on stderr."""
    lock = threading.Lock()

    def on_event(kind: str, details: dict) -> None:
        with lock:
            if kind == "alert" or as_json:
                print(json.dumps({"event": kind, **details}), flush=True)
            elif kind == "error":
                print(f"warning: {details['error']}", file=sys.stderr, flush=True)
            elif kind in ("connected", "dropped", "gap", "piece", "retry"):
                text = ", ".join(f"{k}={v}" for k, v in details.items())
                print(f"watch: {kind} ({text})", file=sys.stderr, flush=True)
    return on_event, lock


def _answers(as_json: bool, lock: threading.Lock):
    def on_answer(question: str, result) -> None:
        from videomini.timerefs import format_time

        with lock:
            if isinstance(result, Exception):
                print(json.dumps({"event": "answer", "question": question, "error": str(result)}) if as_json
                      else f"error: {result}", flush=True)
                return
            if as_json:
                print(json.dumps({"event": "answer", **result.to_dict()}), flush=True)
                return
            print(result.text, flush=True)
            for e, wall in zip(result.answer.evidence, result.wall_utc):
                print(f"  at {format_time(e.time_s)} of stream ({wall}), score {e.score:.2f}", flush=True)
    return on_answer


def _read_questions(session, as_json: bool, lock: threading.Lock, max_new_tokens: int) -> threading.Thread:
    """Questions from stdin, one a line, answered while decoding goes on (a thread: the prompt never stops it)."""
    from videomini.pipelines.watch import answer_questions

    interactive = sys.stdin.isatty()

    def lines():
        while True:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                return
            yield line

    thread = threading.Thread(target=answer_questions, daemon=True, name="videomini-watch-questions",
                              args=(session, lines(), _answers(as_json, lock)),
                              kwargs={"max_new_tokens": max_new_tokens})
    thread.start()
    return thread


@app.command()
def watch(
    source: str = typer.Argument(..., help="A file, udp:// srt:// rtsp:// rtmp:// http(s):// (HLS), /dev/videoN, "
                                           "or - (stdin)."),
    realtime: bool = typer.Option(False, "--realtime", help="Play a file at its own pace (default: as fast as it "
                                                            "decodes)."),
    loop: bool = typer.Option(False, "--loop", help="Start a file again at its end (the timeline goes on)."),
    alert: list[str] = typer.Option([], "--alert", help="A yes/no question evaluated every --every seconds; "
                                                        "a JSON line when its answer changes (repeatable)."),
    every: str = typer.Option("5s", "--every", help="How often standing questions are evaluated (stream time)."),
    library: Optional[Path] = typer.Option(None, "--library", help="Commit the stream into this library in "
                                                                   "pieces, searchable while it runs."),
    piece: str = typer.Option("60s", "--piece", help="Length of one library piece."),
    retain: str = typer.Option("1h", "--retain", help="Stream kept for questions (older frames are dropped)."),
    library_retain: str = typer.Option("24h", "--library-retain", help="Stream kept in the library."),
    window: str = typer.Option("10m", "--window", help="Newest stream kept in RAM (within the planner's budget)."),
    timeout: str = typer.Option("10s", "--timeout", help="Give up opening or reading the source after this."),
    duration: Optional[str] = typer.Option(None, "--duration", help="Stop after this much stream."),
    signals: str = typer.Option("", "--signals", help="speech, ocr (comma-separated): transcribed / read in "
                                                       "chunks, quoted in answers, searchable in --library."),
    fps: float = typer.Option(1.0, "--fps", min=0.01, max=30.0, help="Frames kept per second of stream."),
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL", help="Checkpoint folder or hub id."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16 or fp32."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, max=4096, help="Longest answer, in tokens."),
    no_prompt: bool = typer.Option(False, "--no-prompt", help="Do not read questions from stdin."),
    serve: bool = typer.Option(False, "--serve", help="Serve the session: HTTP API and a live page at /live."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --serve: the address (loopback unless --token)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="With --serve: the port (0: any free one)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="VIDEOMINI_TOKEN",
                                        help="With --serve: bearer token required on every route."),
    as_json: bool = typer.Option(False, "--json", help="Every event and answer as a JSON line on stdout."),
) -> None:
    """Watch a live stream (or a file as one): ask questions while it plays, get alerts, index it as it goes."""
    from videomini.live import WatchOptions

    if len(alert) > 16:
        fail(f"--alert: at most 16 standing questions, not {len(alert)}")
    alert, _ = [limits.check_question(question, "--alert") for question in alert], limits.check_fps(fps)
    options = WatchOptions(fps=fps, window_s=_seconds(window, "--window"), retain_s=_seconds(retain, "--retain"),
                           timeout_s=_seconds(timeout, "--timeout"), alerts=tuple(alert),
                           every_s=_seconds(every, "--every"), max_new_tokens=max_new_tokens,
                           piece_s=_seconds(piece, "--piece") if library else None,
                           signals=_signals(signals))
    stop_s = _seconds(duration, "--duration") if duration else None
    served = (host, port, token) if serve else None
    code = _run(source, options, library, _seconds(library_retain, "--library-retain"), stop_s, realtime, loop,
                model, device, dtype, no_prompt or serve or source == "-", as_json, served)
    raise typer.Exit(code)


def _run(source, options, library, library_retain_s, stop_s, realtime, loop, model, device, dtype, no_prompt,
         as_json, served) -> int:
    """Load the model, start the session, answer questions until the source ends (or --duration, or Ctrl-C)."""
    from videomini.ask import VideoMini
    from videomini.live import parse_source
    from videomini.pipelines.watch import start_watch

    try:
        spec = parse_source(source, realtime=realtime, loop=loop)
        vm = VideoMini.from_pretrained(model, device=device, dtype=dtype)
        on_event, lock = _printer(as_json)
        hub = None
        if served is not None:
            from videomini.pipelines.serve import check_bind
            from videomini.pipelines.serve.live import LiveHub

            check_bind(served[0], served[2], no_auth=False)
            hub, printer = LiveHub(), on_event
            on_event = lambda kind, details: (printer(kind, details), hub.publish(kind, details))  # noqa: E731
        session, pieces = start_watch(vm, spec, options, library, library_retain_s, on_event)
    except ValueError as e:  # a source, library or model failure is a VideominiError: one line (cli/common.py)
        fail(str(e))
    questions = None if no_prompt else _read_questions(session, as_json, lock, options.max_new_tokens)
    try:
        if hub is not None:
            _serve(session, hub, library, served)
        elif stop_s is not None:
            session.wait_for_stream(stop_s)
        else:
            session.ended.wait()
        if questions is not None and not sys.stdin.isatty():
            questions.join()  # piped questions: all answered before the summary
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        if pieces is not None:
            pieces.close()
    status = session.status()
    print(f"watch: {status['frames_encoded']} frames, {status['frames_dropped']} dropped, "
          f"{len(status['gaps'])} gaps, {status['connections']} connections", file=sys.stderr)
    if session.error:
        print(f"error: {session.error}", file=sys.stderr)
        return 1
    return 0


def _serve(session, hub, library, served) -> None:
    """Serve the session until Ctrl-C (uvicorn handles the signal and returns)."""
    from videomini.pipelines.watch import serve_session

    host, port, token = served
    serve_session(session, hub, library, host, port, token,
                  on_listening=lambda url: print(f"videomini watch: serving {url}/live (Ctrl-C stops)",
                                                 file=sys.stderr, flush=True))
