"""What a running server holds: its configuration, the models (loaded once, lazily), the generation queue, and
the one place where a request's media reference becomes a file (by library id, under an allowed folder, or a
decoded upload) — so no path from a request reaches the filesystem anywhere else."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videomini.errors import LimitExceeded, VideominiError
from videomini.limits import IMAGE_MAX_PIXELS, PixelBudget, check_id, check_image_pixels

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class ServeError(VideominiError):
    """An expected failure of one request (or of the server's start): an HTTP status, per instance, and a
    one-line reason; `exit_code` when the CLI reports it (2: the server could not start)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 exit_code: int | None = None) -> None:
        super().__init__(message)
        self.http_status, self.message, self.headers = status, message, headers or {}
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def status(self) -> int:
        return self.http_status

    def http_headers(self) -> dict[str, str]:
        return dict(self.headers)


@dataclass
class ServeConfig:
    library: str | os.PathLike | None = None
    model: str | None = None  # default: the model the library was indexed with, else VIDEOMINI_MODEL / default
    device: str | None = None
    dtype: str | None = None
    token: str | None = None  # bearer token required on every route but the page's static files
    allow_dirs: list[str | os.PathLike] = field(default_factory=list)  # folders chat requests may name files in
    max_waiting: int = 4  # generation requests queued behind the running one; more get 503
    max_body_bytes: int = 64 << 20  # request bodies (chat requests with base64 media) above this get 413
    max_new_tokens: int = 1024  # upper bound a request may ask for
    retry_after_s: int = 5
    host: str = "127.0.0.1"  # the address bound (run() sets it): a Host header naming it is served
    allow_hosts: list[str] = field(default_factory=list)  # more Host names served (a proxy's); "*": any


def check_bind(host: str, token: str | None, no_auth: bool) -> None:
    """Anything but loopback needs a token or an explicit --no-auth: a library's videos are private."""
    if token or no_auth:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK
    if not loopback:
        raise ServeError(400, f"binding {host} exposes the library to the network: give --token T (clients send "
                            f"'Authorization: Bearer T') or --no-auth", exit_code=2)


class QueueFull(ServeError):
    """Generation requests beyond the running one and `max_waiting` queued: 503, retry after a while."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(503, "the model is busy (generation queue full); retry later",
                         {"Retry-After": str(retry_after_s)})


class GenerationQueue:
    """One worker thread per device runs generation jobs in arrival order; at most `max_waiting` wait."""

    def __init__(self, max_waiting: int, retry_after_s: int = 5) -> None:
        self.max_waiting, self.retry_after_s = max_waiting, retry_after_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videomini-generate")
        self._lock = threading.Lock()
        self.in_flight = 0

    def submit(self, job: Callable[[], Any]) -> Future:
        with self._lock:
            if self.in_flight >= 1 + self.max_waiting:
                raise QueueFull(self.retry_after_s)
            self.in_flight += 1
        future = self._worker.submit(job)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future) -> None:
        with self._lock:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def served_host_names(config: ServeConfig) -> frozenset[str] | None:
    """The Host names this server answers to (None: any, by --allow-host '*'): loopback, the bound address and
    --allow-host; bound to every interface, the machine's own names and addresses too. A page on another name
    that DNS rebinding points at this server is refused, token or not."""
    names = set(LOOPBACK) | {name.strip().lower().rstrip(".") for name in config.allow_hosts}
    if "*" in names:
        return None
    host = config.host.strip().lower().strip("[]")
    if host in ("0.0.0.0", "::", ""):
        names |= machine_names()
    else:
        names.add(host)
    return frozenset(names)


def machine_names() -> set[str]:
    """This machine's host names and interface addresses (a server bound to every interface is reached so)."""
    import socket

    import psutil

    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for addresses in psutil.net_if_addrs().values():
        names |= {a.address.split("%")[0].lower() for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)}
    return names


def host_name(header: str) -> str:
    """The name of a Host header without its port: `[::1]:8000` -> `::1`, `Example.COM.:80` -> `example.com`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


class ServerState:
    """Models, storage access and media resolution for one server process."""

    def __init__(self, config: ServeConfig) -> None:
        from videomini import Library

        self.config = config
        self.library = Library(config.library, model=config.model, device=config.device, dtype=config.dtype) \
            if config.library is not None else None
        self.allow_dirs = [Path(d).expanduser().resolve() for d in config.allow_dirs]
        self.queue = GenerationQueue(config.max_waiting, config.retry_after_s)
        self.pixels = PixelBudget()  # decoded pixels held by all requests at once
        self.host_names = served_host_names(config)
        self.scratch = Path(tempfile.mkdtemp(prefix="videomini-serve-"))  # thumbnails, decoded uploads
        self._text_tower: Any = None
        self._vm: Any = None
        self._load_lock = threading.Lock()
        self.live: Any = None  # the live session (`watch --serve`): the chat route answers about it as LIVE_MODEL

    def close(self) -> None:
        import shutil

        self.queue.shutdown()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # ------------------------------------------------------------------ models

    def model_id(self) -> str:
        if self.library is not None:
            return self.library.model_id
        from videomini.loading import default_model_id

        return self.config.model or default_model_id()

    def model(self) -> Any:
        """The VideoMini, loaded on first use (the generation worker calls this, so loads are serialised)."""
        with self._load_lock:
            if self._vm is None:
                if self.library is not None:
                    self._vm = self.library.model()
                else:
                    from videomini.ask import VideoMini

                    self._vm = VideoMini.from_pretrained(self.model_id(), device=self.config.device,
                                                         dtype=self.config.dtype)
            return self._vm

    def text_tower(self) -> Any:
        """The CLIP text tower for search: the loaded model's, else loaded alone once (search needs no LLM).
        None when it cannot be loaded — the search job then reports why or searches text alone."""
        if self._vm is not None:
            return self._vm.text_tower
        with self._load_lock:
            if self._text_tower is None:
                from videomini.loading import CheckpointError
                from videomini.search import text_tower_for
                from videomini.storage import LibraryError

                try:
                    self._text_tower = text_tower_for(self.model_id(), self.config.device or "cpu")
                except (CheckpointError, LibraryError, OSError):
                    return None
            return self._text_tower

    # ------------------------------------------------------------------ the library (read-only)

    def storage(self):
        """The library's storage, opened read-only for one request (new index generations are seen at once)."""
        from videomini.storage import LibraryError, LibraryStore

        if self.library is None:
            raise ServeError(404, "this server has no library (start it with --library DIR)")
        try:
            return LibraryStore(self.library.root)
        except LibraryError as e:
            raise ServeError(503, str(e)) from None

    def video_row(self, video_id: int) -> dict:
        video_id = check_id(video_id, "video id")
        with self.storage() as storage:
            row = storage.video(video_id)
        if row is None:
            raise ServeError(404, f"no video with id {video_id} in the library")
        return row

    def video_file(self, video_id: int) -> Path:
        """A library video's file, found by id through the catalog (never from a path in the request), and only
        while it is the file that was indexed (indexed_file)."""
        return indexed_file(video_id, self.video_row(video_id))

    # ------------------------------------------------------------------ media named by chat requests

    def media_file(self, url: str, kind: str) -> Path:
        """The file a chat content part names: `videomini:ID` (or a bare ID), a file under an --allow-dir
        (path or file:// URL), or a base64 data URL. Anything else is refused with a reason."""
        url = (url or "").strip()
        if not url:
            raise ServeError(400, f"{kind}: empty url")
        ref = url[len("videomini:"):] if url.startswith("videomini:") else url
        if url.startswith("videomini:") or (ref.isascii() and ref.isdigit()):
            return self.video_file(check_id(ref, f"{kind}: videomini:ID"))
        if url.startswith("data:"):
            return self.decode_data_url(url, kind)
        if url.startswith(("http://", "https://")):
            raise ServeError(400, f"{kind}: remote URLs are not fetched; send a library id, an allowed file or a "
                                  f"base64 data URL")
        path = self.allowed_file(url[len("file://"):] if url.startswith("file://") else url, kind)
        if kind == "image_url":
            check_image(path, kind)
        return path

    def allowed_file(self, raw: str, kind: str) -> Path:
        from urllib.parse import unquote

        if not self.allow_dirs:
            raise ServeError(403, f"{kind}: files are not served by path (start the server with --allow-dir DIR)")
        path = Path(unquote(raw)).expanduser()
        if not path.is_absolute():
            raise ServeError(400, f"{kind}: give an absolute path under an allowed folder")
        real = path.resolve()  # symlinks and '..' resolved before the check
        if not any(real == d or d in real.parents for d in self.allow_dirs):
            raise ServeError(403, f"{kind}: {path} is outside the allowed folders")
        if not real.is_file():
            raise ServeError(404, f"{kind}: {path}: no such file")
        return real

    def decode_data_url(self, url: str, kind: str) -> Path:
        """A base64 data URL written to a scratch file; images are checked to be images, videos to be videos."""
        header, _, payload = url.partition(",")
        mime = header[len("data:"):].split(";")[0].lower()
        if not header.endswith(";base64") or not mime.startswith(("image/", "video/")):
            raise ServeError(400, f"{kind}: only base64 data URLs of images or videos are accepted")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(400, f"{kind}: the data URL is not valid base64") from None
        suffix = "." + "".join(c for c in mime.split("/")[1].split("+")[0] if c.isascii() and c.isalnum())[:16]
        handle, name = tempfile.mkstemp(suffix=suffix if mime.startswith("image/") else ".video", dir=self.scratch)
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            check_image(path, kind) if mime.startswith("image/") else check_video(path, kind)
        except BaseException:  # a refused or failed upload is never left in the scratch folder
            self.discard(path)
            raise
        return path

    def discard(self, path: Path | None) -> None:
        """Delete a decoded upload once its request is done (library videos and allowed files are left alone)."""
        if path is not None and path.parent == self.scratch:
            path.unlink(missing_ok=True)


def check_image(path: Path, kind: str) -> tuple[int, int]:
    """An image's (width, height) from its header, within IMAGE_MAX_PIXELS, and its data readable — checked
    before anything decodes it (a 140 KB PNG can hold 12000 x 12000 pixels: 430 MB decoded)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
                check_image_pixels(*size, field=kind)
                image.verify()
    except LimitExceeded:
        raise
    except Image.DecompressionBombError:
        raise LimitExceeded(f"{kind}: over PIL's decompression-bomb limit (IMAGE_MAX_PIXELS is "
                            f"{IMAGE_MAX_PIXELS:,})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ServeError(400, f"{kind}: not a readable image") from None
    return size


def indexed_file(video_id: int, row: dict) -> Path:
    """The file of catalog row `row` while it is the one indexed: opened without following a symlink in its
    place, and of the size and modification time recorded (else the fingerprint) — a file swapped for a link to
    /etc/passwd, or replaced since, is refused."""
    import errno
    import stat as stat_module

    path = Path(row["path"])
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ServeError(404, f"video {video_id}: {path.name} is no longer on disk (moved or deleted)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ServeError(403, f"video {video_id}: {path.name} is now a symbolic link, not the file indexed; "
                                  "refusing to follow it (re-index the real file)") from None
        raise ServeError(403, f"video {video_id}: {path.name}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat_module.S_ISREG(st.st_mode):
        raise ServeError(403, f"video {video_id}: {path.name} is not a regular file")
    if row.get("size") is not None and row.get("mtime_ns") is not None:
        same = (st.st_size, st.st_mtime_ns) == (row["size"], row["mtime_ns"])
    else:
        from videomini.storage import fingerprint

        same = fingerprint(path) == row.get("fingerprint")
    if not same:
        raise ServeError(409, f"video {video_id}: {path.name} changed since it was indexed; re-run videomini index "
                              "to serve it again")
    return path


def check_video(path: Path, kind: str) -> None:
    from videomini.video import VideoError, probe

    try:
        probe(path)
    except VideoError as e:
        raise ServeError(400, f"{kind}: not a readable video ({e.reason})") from None
