"""A live `videomini serve` fuzzed from its own OpenAPI schema (schemathesis): requests that fit the schema and
requests that break it, on every route. Whatever arrives: no 5xx, no response slower than a bound, the server's
memory bounded, and every error in the route's own shape."""

from __future__ import annotations

import httpx
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from videomini.pipelines.serve.process import serve_process

RESPONSE_BOUND_S = 30.0  # the slowest legitimate request here: the first ask loads the tiny model
RSS_GROWTH_BOUND = 1 << 30  # the server may grow by 1 GiB over its size with the model loaded, no more
EXAMPLES = 15  # per route and mode: the whole run stays well under a minute once the server is up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(serve_library, checkpoint):
    """The server as a user starts it (loopback, no token); answers capped at 4 tokens to keep the run short."""
    with serve_process(["--library", str(serve_library[0]), "--model", str(checkpoint), "--device", "cpu",
                        "--max-new-tokens", "4"]) as url:
        server = psutil.Process(url.pid)
        warm = httpx.post(f"{url}/api/ask", json={"question": "What happens?"}, timeout=120)  # loads the model
        assert warm.status_code == 200, warm.text
        yield url, server, server.memory_info().rss


def operations(url: str) -> list:
    """Every route of the server's own OpenAPI schema."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in found} >= {"/api/search", "/api/ask", "/v1/chat/completions", "/media/{video_id}"}
    return found


def check(case, url: str, server: psutil.Process, started_rss: int) -> None:
    response = case.call(base_url=url, timeout=RESPONSE_BOUND_S)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    assert response.elapsed < RESPONSE_BOUND_S
    if response.status_code >= 400:
        error = response.json()["error"]  # the route's shape: {"error": ...}, OpenAI's on /v1
        message = error["message"] if case.path.startswith("/v1/") else error
        assert isinstance(message, str) and message and "\n" not in message
    assert server.memory_info().rss - started_rss < RSS_GROWTH_BOUND


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_request_takes_the_server_down(live, mode):
    """Every route, requests that fit the schema (positive) and requests that break it (negative)."""
    url, server, started_rss = live
    sent: dict[str, int] = {}
    for operation in operations(url):
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case):
            sent[case.path] = sent.get(case.path, 0) + 1
            check(case, url, server, started_rss)

        try:
            fuzz()
        except Unsatisfiable:  # a route without parameters or body has no request that breaks its schema
            assert mode == schemathesis.GenerationMode.NEGATIVE and operation.path not in sent
    assert {"/api/search", "/api/ask", "/v1/chat/completions", "/thumbnails/{video_id}/{t}"} <= set(sent)
