"""One error base (videomini/errors.py): every exception the project defines derives from VideominiError and
carries its exit code and HTTP status; the CLI and the server report each through that one mapping."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import videomini
import videomini.cli
import videomini.pipelines
from videomini.errors import VideominiError, one_line

PACKAGES = (videomini, videomini.pipelines, videomini.cli)


def defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in the package's modules (warnings are not errors: left out)."""
    found = []
    for package in PACKAGES:
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.endswith("__main__"):
                continue
            loaded = importlib.import_module(module.name)
            found += [value for value in vars(loaded).values()
                      if inspect.isclass(value) and issubclass(value, BaseException)
                      and not issubclass(value, Warning) and value.__module__ == module.name]
    return found


EXCEPTIONS = defined_exceptions()


def instance(cls: type[BaseException]) -> BaseException:
    """One instance of each kind, with a reason naming a file (constructors differ by kind)."""
    from videomini.pipelines.serve.state import QueueFull, ServeError
    from videomini.video import VideoError

    if issubclass(cls, VideoError):
        return cls("clip.mp4", "a reason")
    if issubclass(cls, QueueFull):
        return cls(5)
    if issubclass(cls, ServeError):
        return cls(404, "clip.mp4: a reason")
    return cls("clip.mp4: a reason")


def test_the_walk_finds_the_known_kinds():
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"VideoError", "VideoNotFound", "LibraryError", "LibraryBusy", "LibraryDamaged", "CheckpointError",
            "SignalError", "ServeError", "QueueFull", "IndexRunError", "NoStoredFrames", "LimitExceeded",
            "ConfigError", "SourceError", "NothingSeenYet"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_exception_derives_from_the_base_with_a_code_and_a_status(cls):
    assert issubclass(cls, VideominiError), f"{cls.__module__}.{cls.__name__} does not derive from VideominiError"
    error = instance(cls)
    assert isinstance(error.exit_code, int) and 1 <= error.exit_code <= 255
    assert isinstance(error.http_status, int) and 400 <= error.http_status <= 599
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in error.http_headers().items())


def test_multiple_inheritance_kept_where_callers_rely_on_it():
    from videomini.errors import InvalidInput
    from videomini.loading import CheckpointError
    from videomini.video import VideoNotFound

    assert issubclass(VideoNotFound, FileNotFoundError)  # callers catch a missing file as the OS names it
    assert issubclass(InvalidInput, ValueError) and issubclass(CheckpointError, RuntimeError)


def test_codes_that_users_script_against():
    from videomini.pipelines.serve.state import QueueFull
    from videomini.storage import LibraryBusy, LibraryError

    assert (LibraryError.exit_code, LibraryBusy.exit_code) == (1, 2)  # busy: retry later, not a failure of input
    busy = instance(LibraryBusy)
    assert busy.http_status == 503 and busy.http_headers() == {"Retry-After": "5"}
    full = QueueFull(7)
    assert full.http_status == 503 and full.http_headers() == {"Retry-After": "7"}


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_the_cli_exits_with_the_code_the_error_carries(cls, tmp_path, monkeypatch):
    """Raised inside a real command (`info`): one `error:` line, the class's exit code, no traceback."""
    import videomini.video
    from videomini.cli.main import app

    error = instance(cls)

    def probe(_path):
        raise error

    monkeypatch.setattr(videomini.video, "probe", probe)
    result = CliRunner().invoke(app, ["info", str(tmp_path / "clip.mp4")])
    assert result.exit_code == error.exit_code, result.output
    assert result.stderr.strip().splitlines() == [f"error: {one_line(str(error))}"]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def bare_server():
    from videomini.pipelines.serve import ServeConfig, create_app

    with TestClient(create_app(ServeConfig(device="cpu")), base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_the_server_answers_with_the_status_the_error_carries(cls, bare_server, monkeypatch):
    """Raised inside real routes: the class's status, its headers, the reason in each route family's shape."""
    state = bare_server.app.state.videomini
    error = instance(cls)

    def raises(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(state, "storage", raises)
    monkeypatch.setattr(state, "model_id", raises)
    api = bare_server.get("/api/videos")
    assert api.status_code == error.http_status
    assert api.json() == {"error": one_line(str(error), 500)}
    for name, value in error.http_headers().items():
        assert api.headers[name] == value
    openai = bare_server.get("/v1/models")
    assert openai.status_code == error.http_status
    assert openai.json()["error"]["message"] == one_line(str(error), 500)
    assert openai.json()["error"]["code"] == error.http_status


def test_a_bug_is_a_500_in_the_route_shape_not_a_traceback_to_the_client(bare_server, monkeypatch):
    state = bare_server.app.state.videomini

    def broken():
        raise KeyError("generation")

    monkeypatch.setattr(state, "model_id", broken)
    client = TestClient(bare_server.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    response = client.get("/v1/models")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "KeyError" in response.json()["error"]["message"]


def test_one_line_joins_whitespace_and_marks_a_cut():
    assert one_line("a\n  b\tc") == "a b c"
    cut = one_line("x" * 50, 10)
    assert len(cut) == 10 and cut.endswith("…")
