"""A library that notices damage and heals (issue 18): each row of the issue's table as a test, plus `library
--check` / `--repair` round trips.

One pristine library (two small generated videos, the tiny checkpoint) is built per module; each test damages a
copy. Disk full and read-only are simulated by injecting the OSError (or SQLite's error) at the call that writes or
opens -- CI has no small filesystem to fill, and this suite runs as root, which ignores file permissions, so a
chmod'ed copy would stay writable. The read-only test injects exactly what SQLite and the kernel answer on a
read-only mount (checked by hand with `mount --bind -o ro`): opening the WAL catalog read-only fails with "unable to
open database file" (its shared-memory file cannot be created) and creating the lock file fails with EROFS.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videomini.cli.main import app
from videomini.library import Library
from videomini.pipelines.local_engine import LocalEngine
from videomini.storage import LibraryError, LibraryStore
from videomini.storage import catalog as catalog_module
from videomini.storage import lock as lock_module
from videomini.storage import shards as shards_module

from synth import make_numbered_video


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, checkpoint):
    """A library of two indexed videos, built once; tests damage copies of it."""
    root = tmp_path_factory.mktemp("integrity")
    videos = [make_numbered_video(root / "one.mp4", seconds=4, fps=5),
              make_numbered_video(root / "two.mp4", seconds=3, fps=5)]
    library = root / "lib"
    report = Library(library, model=str(checkpoint)).index(videos, engine=LocalEngine(workers=1))
    assert len(report.indexed) == 2 and not report.failed
    return library, [Path(v).resolve() for v in videos], str(checkpoint)


@pytest.fixture
def lib(pristine, tmp_path):
    """A fresh copy of the pristine library (the videos it indexed stay where they are)."""
    library, videos, model = pristine
    copy = tmp_path / "lib"
    shutil.copytree(library, copy)
    return copy, videos, model


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output and not isinstance(result.exception, (OSError, sqlite3.Error)), \
        result.output
    return result


def assert_one_line_error(result, *words: str) -> None:
    """A non-zero exit with one `error:` line on stderr naming every word, and no traceback."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def search(library: Path) -> list[dict]:
    result = cli("search", "a number", "--library", str(library), "--json", "--signal", "visual")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def index(library: Path, videos: list[Path], model: str):
    return cli("index", *map(str, videos), "--library", str(library), "--model", model, "--workers", "1")


def state(library: Path) -> tuple:
    """What must survive a repair: the done videos (path, fingerprint, frames, shard) and the index's rows."""
    with LibraryStore(library) as store:
        rows = [(v["path"], v["fingerprint"], v["status"], v["n_frames"], v["shard"], v["model_id"])
                for v in store.videos()]
        ids, vectors = store.indexed_vectors()
        return rows, ids.tolist(), vectors.round(5).tolist()


def base_faiss_file(library: Path) -> Path:
    """The published base part's FAISS file of frame embeddings."""
    manifest = json.loads((library / "index.json").read_text())
    return library / manifest["parts"][0]["frames"]["index_file"]


def tensor_offset(shard: Path, name: str) -> int:
    """Where tensor `name`'s bytes start in a safetensors file (8 length bytes, the JSON header, the data)."""
    raw = shard.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return 8 + size + json.loads(raw[8 : 8 + size])[name]["data_offsets"][0]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_pristine_library_checks_ok(lib):
    library, _, _ = lib
    result = cli("library", str(library), "--check")
    assert result.exit_code == 0 and "ok" in result.stdout, result.output
    assert Library(library).check() == []


def test_index_stores_what_the_readers_read(lib):
    """No frame tokens (an answer re-decodes its frames to fuse the question): embeddings and times only."""
    from safetensors import safe_open

    library, _, _ = lib
    for shard in (library / "shards").glob("*.safetensors"):
        with safe_open(shard, framework="np") as f:
            assert set(f.keys()) == {"embeddings", "timestamps_s"} and f.metadata()["format_version"] == "2"


def test_deleted_index_file_is_reported_then_rebuilt_by_index(lib):
    library, videos, model = lib
    before = state(library)
    faiss_file = base_faiss_file(library)
    faiss_file.unlink()
    assert_one_line_error(cli("search", "a number", "--library", str(library)), faiss_file.name, "missing",
                          "--repair")
    stats = json.loads(cli("library", str(library), "--json").stdout)
    assert not stats["index_current"] and any(faiss_file.name in p for p in stats["problems"])
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1 and f"{faiss_file}: index file missing" in check.stdout
    assert index(library, videos, model).exit_code == 0  # nothing to encode, but the index is rebuilt
    assert Library(library).check() == [] and state(library) == before and search(library)


def test_flipped_bytes_in_the_faiss_file_never_yield_a_result(lib):
    library, _, _ = lib
    before, results = state(library), search(library)
    faiss_file = base_faiss_file(library)
    flip_byte(faiss_file, faiss_file.stat().st_size - 20)  # inside the stored vectors: FAISS itself would not notice
    result = cli("search", "a number", "--library", str(library), "--json")
    assert_one_line_error(result, faiss_file.name, "damaged", "--repair")
    assert result.stdout == ""
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1 and f"{faiss_file}: index file damaged" in check.stdout
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0 and "rebuilt the search index" in repair.stdout, repair.output
    assert state(library) == before and search(library) == results


def test_flipped_bytes_in_a_shard_are_caught_and_the_video_reindexed(lib):
    library, videos, model = lib
    before = state(library)
    with LibraryStore(library) as store:
        row = store.video(videos[0])
    shard = library / "shards" / row["shard"]
    flip_byte(shard, tensor_offset(shard, "embeddings") + 5)  # the header still parses: only checksums notice
    with LibraryStore(library) as store, pytest.raises(LibraryError, match=f"{shard.name}: shard damaged"):
        store.load_frames(row["id"])
    with LibraryStore(library, writer=True) as store, pytest.raises(LibraryError, match="shard damaged"):
        store.compact_index()  # the bad vectors never reach the index
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1 and shard.name in check.stdout and "damaged" in check.stdout
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0 and "marked for re-indexing" in repair.stdout, repair.output
    with LibraryStore(library) as store:
        other_frames = before[0][1][3]  # the index holds the other video's frames only
        assert store.video(videos[0])["status"] == "pending" and store.manifest()["n_vectors"] == other_frames
    assert index(library, videos, model).exit_code == 0  # re-does it from the video file
    assert state(library) == before and Library(library).check() == []


def test_deleted_shard_is_reported_and_reindexed(lib):
    library, videos, model = lib
    before = state(library)
    with LibraryStore(library) as store:
        shard = library / "shards" / store.video(videos[1])["shard"]
    shard.unlink()
    stats = json.loads(cli("library", str(library), "--json").stdout)
    assert stats["problems"] == [f"{shard}: shard missing ({videos[1]})"]
    assert cli("library", str(library)).stdout.count("--repair") == 1
    assert cli("library", str(library), "--check").exit_code == 1
    assert index(library, videos, model).exit_code == 0
    assert state(library) == before and Library(library).check() == []


def test_truncated_catalog_is_one_line_then_rebuilt_from_the_shards(lib):
    library, videos, model = lib
    before = state(library)
    catalog = library / "catalog.sqlite"
    catalog.write_bytes(catalog.read_bytes()[: catalog.stat().st_size // 2])
    for args in (("library", str(library)), ("search", "a number", "--library", str(library)),
                 ("ask", "what number?", "--library", str(library), "--model", model)):
        assert_one_line_error(cli(*args), "catalog", "--repair")
    assert_one_line_error(index(library, videos, model), "catalog", "--repair")  # refuses: would lose the shards
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0 and "rebuilt the catalog from 2 shards" in repair.stdout, repair.output
    assert state(library)[0] == before[0] and state(library)[1:] == before[1:]
    assert any(p.name.startswith("catalog.sqlite.damaged-") for p in library.iterdir())
    assert index(library, videos, model).stdout.count("skipped") >= 1  # the rebuilt catalog knows both videos
    assert search(library)


def test_lost_catalog_is_not_replaced_by_an_empty_one(lib):
    library, videos, model = lib
    before = state(library)
    (library / "catalog.sqlite").unlink()
    assert_one_line_error(index(library, videos, model), "catalog missing", "--repair")
    assert len(list((library / "shards").glob("*.safetensors"))) == 2  # nothing collected as garbage
    assert cli("library", str(library), "--repair").exit_code == 0
    assert state(library) == before


def test_read_only_library_is_searched_and_index_refuses(lib, monkeypatch):
    library, videos, model = lib
    results = search(library)
    for side in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (library / side).unlink(missing_ok=True)  # as a cleanly closed library copied to read-only media
    files_before = {p: p.stat().st_mtime_ns for p in library.rglob("*")}
    real_connect, real_open = sqlite3.connect, os.open

    def connect(database, *args, **kwargs):  # SQLite on a read-only mount: WAL needs a -shm it cannot create
        if "immutable=1" not in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *args, **kwargs)

    def open_(path, flags, *args):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and str(path).startswith(str(library)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(catalog_module.sqlite3, "connect", connect)
    monkeypatch.setattr(lock_module.os, "open", open_)
    assert search(library) == results
    assert cli("library", str(library)).exit_code == 0
    assert cli("library", str(library), "--check").exit_code == 0
    answer = cli("ask", "what number?", "--library", str(library), "--model", model, "--max-new-tokens", "2",
                 "--json")
    assert answer.exit_code == 0 and json.loads(answer.stdout)["evidence"], answer.output
    assert_one_line_error(index(library, videos, model), str(library), "read-only")
    assert {p: p.stat().st_mtime_ns for p in library.rglob("*")} == files_before  # nothing written


def test_permission_denied_is_one_line(lib, monkeypatch):
    library, videos, model = lib
    real_open = os.open

    def open_(path, flags, *args):
        if str(path) == str(library / "lock"):
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(lock_module.os, "open", open_)
    assert_one_line_error(index(library, videos, model), str(library), "permission denied")
    assert_one_line_error(cli("library", str(library), "--repair"), "permission denied")


@pytest.mark.parametrize("where", ["shard", "catalog"])
def test_disk_full_while_indexing_is_one_line_and_loses_nothing(lib, monkeypatch, where, tmp_path):
    library, videos, model = lib
    new = make_numbered_video(tmp_path / "three.mp4", seconds=3, fps=5)
    before = state(library)
    if where == "shard":  # the OS refuses the shard's bytes
        def write(path, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(shards_module, "atomic_write", write)
    else:  # SQLite's answer when the catalog's WAL cannot grow
        def mark_done(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(catalog_module.Catalog, "mark_done", mark_done)
    assert_one_line_error(index(library, [*videos, new], model), str(library), "disk full", "nothing indexed is lost")
    monkeypatch.undo()
    rows, *index_rows = state(library)  # what was indexed is intact and searchable; the new video is unfinished
    assert [r for r in rows if r[2] == "done"] == before[0] and index_rows == list(before[1:])
    result = index(library, [*videos, new], model)
    assert result.exit_code == 0, result.output
    with LibraryStore(library) as store:
        assert store.video(new)["status"] == "done" and store.index_is_current()
    assert Library(library).check() == []


def test_check_and_repair_refuse_a_folder_that_is_no_library(tmp_path):
    for flag in ("--check", "--repair"):
        assert_one_line_error(cli("library", str(tmp_path), flag), "not a videomini library")
    assert list(tmp_path.iterdir()) == []  # nothing created: no catalog, no lock


def test_library_made_before_checksums_still_reads_checks_and_gains_them(lib):
    library, videos, model = lib
    results = search(library)
    db = sqlite3.connect(library / "catalog.sqlite")
    db.execute("ALTER TABLE videos DROP COLUMN checksum")  # as a catalog written before shards were checksummed
    db.commit()
    db.close()
    assert search(library) == results and Library(library).check() == []
    assert index(library, videos, model).exit_code == 0  # a writer adds the column; old rows stay unverified
    with LibraryStore(library) as store:
        assert [v["checksum"] for v in store.videos()] == [None, None]
    assert Library(library).check() == [] and search(library) == results
    assert Library(library).repair() == []  # nothing to fix: the checksums are recorded, the index left alone
    with LibraryStore(library) as store:
        assert all(v["checksum"] for v in store.videos())
    assert Library(library).check() == [] and search(library) == results


# ---------------------------------------------------------------------------------------------------------
# Issue 23: repair never destroys what it cannot rebuild; the manifest is verified and rebuildable
# ---------------------------------------------------------------------------------------------------------


def shard_bytes(library: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (library / "shards").glob("*.safetensors")}


def sql(library: Path, statement: str, *args) -> None:
    db = sqlite3.connect(library / "catalog.sqlite")
    db.execute(statement, args)
    db.commit()
    db.close()


def test_wrong_recorded_checksum_repairs_the_record_not_the_shard(lib, tmp_path):
    library, videos, _ = lib
    before, results, shards = state(library), search(library), shard_bytes(library)
    with LibraryStore(library) as store:
        row = store.video(videos[0])
    sql(library, "UPDATE videos SET checksum = 'crc32:00000000' WHERE id = ?", row["id"])
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1 and "recorded checksum of this shard is wrong" in check.stdout, check.output
    moved = tmp_path / "elsewhere.mp4"
    os.replace(videos[0], moved)  # its video file gone: a deleted shard could never be rebuilt
    try:
        repair = cli("library", str(library), "--repair")
    finally:
        os.replace(moved, videos[0])
    assert repair.exit_code == 0 and "repaired the catalog's record" in repair.stdout, repair.output
    assert shard_bytes(library) == shards and not (library / "quarantine").exists()
    assert state(library) == before and search(library) == results and Library(library).check() == []


def test_damaged_shard_goes_to_quarantine_never_deleted(lib, tmp_path):
    library, videos, _ = lib
    with LibraryStore(library) as store:
        shard = library / "shards" / store.video(videos[1])["shard"]
    flip_byte(shard, tensor_offset(shard, "timestamps_s") + 3)
    damaged = shard.read_bytes()
    moved = tmp_path / "gone.mp4"
    os.replace(videos[1], moved)
    try:
        repair = cli("library", str(library), "--repair")
    finally:
        os.replace(moved, videos[1])
    assert repair.exit_code == 0 and "quarantine" in repair.stdout and "video file is gone" in repair.stdout
    assert "1 damaged file(s) repair moved aside" in repair.stderr
    kept = [p for p in (library / "quarantine").iterdir() if not p.name.endswith(".why.txt")]
    assert [p.read_bytes() for p in kept] == [damaged] and not shard.exists()
    assert "shard damaged" in next((library / "quarantine").glob("*.why.txt")).read_text()
    assert Library(library).check() == []  # the other video answers as before


def edit_manifest(library: Path, change) -> None:
    path = library / "index.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=1))


def swap_paths(manifest: dict) -> None:
    from videomini.storage.manifest import manifest_checksum

    one, two = manifest["videos"].values()
    one["path"], two["path"] = two["path"], one["path"]
    manifest["checksum"] = manifest_checksum(manifest)  # as a writer with a bug would publish it


PATH_DAMAGE = {
    "changed path": lambda m: m["videos"]["1"].update(path="/nowhere/else.mp4"),
    "swapped paths, checksum recomputed": swap_paths,
}


@pytest.mark.parametrize("damage", PATH_DAMAGE.values(), ids=PATH_DAMAGE.keys())
def test_a_changed_path_in_the_manifest_is_damage_everywhere(lib, damage):
    library, videos, model = lib
    before, results = state(library), search(library)
    edit_manifest(library, damage)
    assert_one_line_error(cli("search", "a number", "--library", str(library), "--signal", "visual"),
                          "index.json", "--repair")
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1 and "index.json" in check.stdout, check.output
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0 and "rebuilt the search index" in repair.stdout, repair.output
    assert state(library) == before and search(library) == results and Library(library).check() == []


def flipped_digit(raw: bytes, at: int) -> bytes:
    """One digit changed (still valid JSON: only the checksum notices)."""
    return raw[:at] + bytes([ord("0") + (raw[at] - ord("0") + 1) % 10]) + raw[at + 1:]


MANIFEST_DAMAGE = {
    "garbage": lambda raw: b"\x00garbage\xff",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "flipped byte": lambda raw: flipped_digit(raw, raw.index(b'"n_frames": ') + len(b'"n_frames": ')),
    "empty object": lambda raw: b"{}",
}


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE.values(), ids=MANIFEST_DAMAGE.keys())
def test_damaged_manifest_is_one_line_then_rebuilt_by_repair(lib, damage):
    library, videos, model = lib
    before, results = state(library), search(library)
    manifest = library / "index.json"
    manifest.write_bytes(damage(manifest.read_bytes()))
    for args in (("search", "a number", "--library", str(library)), ("library", str(library), "--check")):
        result = cli(*args)
        assert result.exit_code != 0 and "index.json" in result.output and "KeyError" not in result.output
    stats = json.loads(cli("library", str(library), "--json").stdout)
    assert any("index.json" in p for p in stats["problems"])
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0 and "index manifest damaged" in repair.stdout, repair.output
    assert any(p.name.startswith("index.json.") for p in (library / "quarantine").iterdir())
    assert state(library) == before and search(library) == results and Library(library).check() == []


def test_index_rebuilds_a_damaged_manifest(lib):
    library, videos, model = lib
    before, results = state(library), search(library)
    (library / "index.json").write_bytes(b"{}")
    result = index(library, videos, model)
    assert result.exit_code == 0, result.output
    assert state(library) == before and search(library) == results and Library(library).check() == []


def test_deleted_manifest_is_damage_with_a_repair_hint(lib):
    library, videos, model = lib
    before, results = state(library), search(library)
    (library / "index.json").unlink()
    assert_one_line_error(cli("search", "a number", "--library", str(library)), "index manifest missing",
                          "--repair")
    assert cli("library", str(library), "--check").exit_code == 1
    assert cli("library", str(library), "--repair").exit_code == 0
    assert state(library) == before and search(library) == results


def test_empty_catalog_is_one_line_with_the_recovery(lib):
    library, videos, model = lib
    before = state(library)
    (library / "catalog.sqlite").write_bytes(b"")
    for args in (("library", str(library)), ("search", "a number", "--library", str(library))):
        result = cli(*args)
        assert_one_line_error(result, "catalog", "--repair")
        assert "no such table" not in result.output
    assert cli("library", str(library), "--repair").exit_code == 0
    assert state(library) == before


def test_changed_path_byte_in_a_catalog_row_is_repaired_from_the_shard(lib):
    library, videos, model = lib
    before, results = state(library), search(library)
    catalog = library / "catalog.sqlite"
    raw = bytearray(catalog.read_bytes())
    name = videos[0].name.encode()
    at = raw.index(name)  # the first copy SQLite stored: the row's or its UNIQUE index entry's
    raw[at] ^= 0x01
    catalog.write_bytes(bytes(raw))
    check = cli("library", str(library), "--check")
    assert check.exit_code == 1, check.output
    assert_one_line_error(index(library, videos, model), "catalog", "--repair")  # never carries on silently
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0, repair.output
    assert state(library) == before and search(library) == results and Library(library).check() == []


LIBRARY_FILES = {"catalog": "catalog.sqlite", "manifest": "index.json", "index file": "part-*.frames.faiss",
                 "index ids": "part-*.frames.ids.npy", "shard": "shards/*.safetensors"}


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9], ids=["at 30%", "at 60%", "at 90%"])
@pytest.mark.parametrize("name", LIBRARY_FILES.values(), ids=LIBRARY_FILES.keys())
def test_repair_after_any_single_file_damage_keeps_every_good_shard_and_the_answers(lib, name, where):
    """Issue 23's promise: one file damaged anywhere, --repair leaves every shard whose own checksums verify in
    place (byte for byte) and the library answering as before (a damaged shard's video after re-indexing)."""
    library, videos, model = lib
    before, results, shards = state(library), search(library), shard_bytes(library)
    target = sorted(library.glob(name))[0]
    flip_byte(target, int(target.stat().st_size * where))
    repair = cli("library", str(library), "--repair")
    assert repair.exit_code == 0, repair.output
    intact = {n: b for n, b in shards.items() if (library / "shards" / n) != target}
    assert {n: b for n, b in shard_bytes(library).items() if n in intact} == intact
    if target.parent.name == "shards" and not target.exists():  # it failed its own checks: re-index its video
        assert index(library, videos, model).exit_code == 0
    assert state(library) == before and search(library) == results and Library(library).check() == []
