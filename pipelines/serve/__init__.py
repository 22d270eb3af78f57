"""`videomini serve`: a web page, an HTTP API and an OpenAI-compatible chat endpoint over one library.

A thin layer: every answer comes from the library's own jobs (search, ask, ask --library) through the public
API; this package adds only what a server needs — a model loaded once, lazily; generation serialised per device
behind a bounded queue; auth, size limits and one-line 4xx errors; media by video id with HTTP range requests.

    from videomini.pipelines.serve import ServeConfig, create_app
    app = create_app(ServeConfig(library="~/videos.vmlib"))   # any ASGI server; `videomini serve` uses uvicorn
"""

from collections.abc import Callable

from videomini.pipelines.serve.state import ServeConfig, ServeError, check_bind

__all__ = ["ServeConfig", "ServeError", "check_bind", "create_app", "run"]


def create_app(config: ServeConfig):
    from videomini.pipelines.serve.app import create_app as _create_app

    return _create_app(config)


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, no_auth: bool = False,
        on_listening: Callable[[str], None] | None = None, extend: Callable | None = None) -> None:
    """Check the bind is safe, bind (port 0: any free port), tell `on_listening` the URL, serve until
    interrupted (uvicorn). `extend(app)` adds routes (`watch --serve`: the live session's)."""
    import dataclasses
    import socket

    import uvicorn

    check_bind(host, config.token, no_auth)
    config = dataclasses.replace(config, host=host)  # a Host header naming the bound address is served
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(503, f"cannot listen on {host}:{port}: {e.strerror or e}", exit_code=2) from None
    bound = sock.getsockname()[1]
    app = create_app(config)
    if extend is not None:
        extend(app)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    # listen before announcing: a client that connects while uvicorn is still starting waits in the backlog
    # instead of being refused (uvicorn's own listen() on this socket later only sets the backlog again)
    sock.listen(server.config.backlog)
    if on_listening is not None:
        on_listening(f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{bound}")
    server.run(sockets=[sock])
