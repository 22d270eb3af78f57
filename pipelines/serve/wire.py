"""What goes over the wire besides answers: the one place an exception becomes an HTTP status and a body in the
route's error shape (`{"error": reason}` on /api and the media routes, OpenAI's shape on /v1), and server-sent
event frames."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from videomini.errors import VideominiError, one_line

WIRE_LINE_LIMIT = 500  # characters of a reason sent to a client


def error_status(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """(status, one-line reason, headers) for an exception: a VideominiError says its own status; anything else
    is a bug of ours (500, its type named so the log line can be found)."""
    if isinstance(exc, VideominiError):
        return exc.http_status, one_line(str(exc) or type(exc).__name__, WIRE_LINE_LIMIT), exc.http_headers()
    return 500, one_line(f"internal error: {type(exc).__name__}: {exc}", WIRE_LINE_LIMIT), {}


def error_body(path: str, status: int, message: str) -> dict:
    """{"error": "reason"}; on /v1 routes OpenAI's shape, so OpenAI clients raise with the reason."""
    message = one_line(message, WIRE_LINE_LIMIT)
    if path.startswith("/v1/") or path == "/v1":
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"error": message}


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as the route at `path` answers it."""
    return JSONResponse(error_body(path, status, message), status_code=status, headers=headers or None)


def exception_response(path: str, exc: BaseException) -> JSONResponse:
    """An exception as the route at `path` answers it (status and headers from the exception)."""
    status, message, headers = error_status(exc)
    return error_response(path, status, message, headers)


def error_event(exc: BaseException) -> dict:
    """An exception met after a stream started: the reason and status travel in the stream."""
    status, message, _ = error_status(exc)
    return {"error": message, "status": status}


def sse(event: str | None, data: dict | str) -> str:
    """One server-sent event: `event:` (when named) and one `data:` line of JSON (or a literal like [DONE])."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
