"""The index manifest (storage/manifest.py): its own checksum, every kind of damage one LibraryDamaged line with the
repair hint (never a KeyError), older formats read as the current one, entries checked against the catalog."""

from __future__ import annotations

import json

import pytest

from videomini.storage import LibraryError
from videomini.storage.manifest import (
    INDEX_FORMAT_VERSION,
    MANIFEST,
    entry_problems,
    manifest_checksum,
    read_manifest,
    write_manifest,
)


def manifest() -> dict:
    part = {"id": "part-000001", "kind": "base",
            "frames": {"factory": "Flat", "nprobe": None, "n_vectors": 3, "index_file": "part-000001.frames.faiss",
                       "ids_file": "part-000001.frames.ids.npy", "files": {}}, "text": None}
    videos = {"1": {"path": "/v/a.mp4", "shard": "1-abc.safetensors", "version": 1.0, "n_frames": 3, "n_text": 0,
                    "part": "part-000001", "checksum": "crc32:00000001"}}
    return {"format_version": INDEX_FORMAT_VERSION, "generation": 1, "parts": [part], "videos": videos,
            "previous_files": []}


def test_written_manifest_reads_back_and_carries_its_checksum(tmp_path):
    write_manifest(tmp_path, manifest())
    read = read_manifest(tmp_path)
    assert read["checksum"] == manifest_checksum(read) and read["videos"]["1"]["path"] == "/v/a.mp4"
    assert read_manifest(tmp_path / "nothing-here") is None  # never built: not damage


@pytest.mark.parametrize("content", [b"", b"\x00\xff", b"[]", b"{}", b'{"format_version": 3}', b'{"generation": 1'],
                         ids=["empty", "garbage", "a list", "empty object", "no checksum", "truncated"])
def test_every_damage_is_one_line_with_the_repair_hint(tmp_path, content):
    (tmp_path / MANIFEST).write_bytes(content)
    with pytest.raises(LibraryError) as error:
        read_manifest(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / MANIFEST}: index manifest damaged") and "--repair" in message
    assert "\n" not in message and "KeyError" not in message


def test_an_edit_that_still_parses_is_caught_by_the_checksum(tmp_path):
    write_manifest(tmp_path, manifest())
    edited = json.loads((tmp_path / MANIFEST).read_text())
    edited["videos"]["1"]["path"] = "/elsewhere.mp4"
    (tmp_path / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(LibraryError, match="checksum mismatch"):
        read_manifest(tmp_path)


def test_a_consistent_manifest_missing_a_key_is_damage_not_a_keyerror(tmp_path):
    broken = manifest()
    del broken["videos"]["1"]["shard"]
    write_manifest(tmp_path, broken)  # checksummed as written: only the structure check notices
    with pytest.raises(LibraryError, match="malformed"):
        read_manifest(tmp_path)


def test_format_2_reads_as_format_3(tmp_path):
    old = manifest()
    old["format_version"], old["segments"], old["n_segments"] = 2, old.pop("parts"), 1
    old["videos"]["1"]["segment"] = old["videos"]["1"].pop("part")
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    read = read_manifest(tmp_path)
    assert read["format_version"] == INDEX_FORMAT_VERSION and read["parts"][0]["id"] == "part-000001"
    assert read["videos"]["1"]["part"] == "part-000001" and read["n_parts"] == 1 and "segments" not in read


def test_entries_are_checked_against_the_catalog():
    rows = {1: {"path": "/v/a.mp4", "shard": "1-abc.safetensors"}}
    assert entry_problems(manifest(), rows) == []
    swapped = manifest()
    swapped["videos"]["1"]["path"] = "/v/b.mp4"
    assert "in the index but '/v/a.mp4' in the catalog" in entry_problems(swapped, rows)[0]
    renamed = manifest()
    renamed["videos"]["2"] = renamed["videos"].pop("1")
    assert "of another video" in entry_problems(renamed, rows)[0]
    assert entry_problems(manifest(), {1: {"path": "/v/a.mp4", "shard": "1-new.safetensors"}}) == []  # re-indexing
