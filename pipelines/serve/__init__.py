"""`videomini serve`: a web page, an HTTP API and an OpenAI-compatible chat endpoint over one library.

A thin layer: every answer comes from the library's own jobs (search, ask, ask --library) through the public
API; this package adds only what a server needs — a model loaded once, lazily; generation serialised per device
behind a bounded queue; auth, size limits and one-line 4xx errors; media by video id with HTTP range requests.

    from videomini.pipelines.serve import ServeConfig, create_app
    app = create_app(ServeConfig(library="~/videos.vmlib"))   # any ASGI server; `videomini serve` uses uvicorn
"""

from videomini.pipelines.serve.state import ServeConfig, ServeError, check_bind

__all__ = ["ServeConfig", "ServeError", "check_bind", "create_app", "run"]


def create_app(config: ServeConfig):
    from videomini.pipelines.serve.app import create_app as _create_app

    return _create_app(config)


def run(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, no_auth: bool = False) -> None:
    """Check the bind is safe, then serve until interrupted (uvicorn)."""
    import uvicorn

    check_bind(host, config.token, no_auth)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
