"""`videomini serve --library DIR`: the web page, HTTP API and OpenAI-compatible endpoint over a library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from videomini.cli.common import fail
from videomini.cli.main import app
from videomini.config import absolute_model_id


@app.command()
def serve(
    library: Optional[Path] = typer.Option(None, "--library", help="Library folder to serve (opened read-only)."),
    model: Optional[str] = typer.Option(None, "--model", envvar="VIDEOMINI_MODEL",
                                        help="Checkpoint folder or hub id (default: the one the library was "
                                             "indexed with). Loaded once, on the first request that needs it."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs "
                                                         "--token or --no-auth."),
    port: int = typer.Option(8000, "--port", min=0, max=65535,
                             help="Port (0: any free port; the log line says which)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="VIDEOMINI_TOKEN",
                                        help="Bearer token required on every route but the page's files."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve a non-loopback address without a token."),
    allow_dir: list[Path] = typer.Option([], "--allow-dir", help="Folder whose files chat requests may name "
                                                                 "(repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda when present)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16 or fp32."),
    queue: int = typer.Option(4, "--queue", min=0, help="Generation requests that may wait; more get 503."),
    max_upload_mb: int = typer.Option(64, "--max-upload-mb", min=1, help="Largest request body (base64 media)."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, max=8192, help="Most tokens one request "
                                       "may generate (a request asking for more gets this many)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another Host name to serve, e.g. a proxy's "
                                         "(repeatable; '*' serves any). Loopback names and the bound address "
                                         "are always served; others are refused (DNS-rebinding protection)."),
) -> None:
    """Serve a library to browsers and programs: search, ask (streamed), the videos, an OpenAI-style chat API."""
    from videomini.pipelines.serve import ServeConfig, run

    if library is not None and not (library / "catalog.sqlite").is_file():
        fail(f"{library}: not a videomini library (index into it first: videomini index VIDEOS --library {library})")
    config = ServeConfig(library=library, model=absolute_model_id(model), device=device, dtype=dtype, token=token,
                         allow_dirs=list(allow_dir), max_waiting=queue, max_body_bytes=max_upload_mb << 20,
                         allow_hosts=list(allow_host), max_new_tokens=max_new_tokens)
    run(config, host=host, port=port, no_auth=no_auth,
        on_listening=lambda url: print(f"videomini serve: listening on {url}/ (library: {library or 'none'}; "
                                       f"Ctrl-C stops)", file=sys.stderr, flush=True))
