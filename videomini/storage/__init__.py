"""The on-disk storage of a video library, split by concern:

    catalog.py       SQLite catalog (WAL): one row per video file, its status, and the library's meta
    shards.py        one durable safetensors file per indexed video
    vector_index.py  FAISS primitives: which index for how many vectors, build, memory-mapped read, filtered search
    manifest.py      the index manifest (index.json): checksummed, verified, read in every format
    index_parts.py   writing one immutable base or delta index part from the shards
    index_snapshot.py  reading: open parts, one generation held whole, searches merged over the parts
    published_index.py  the published index: publish, compact, garbage-collect, verify, open snapshots
    lock.py          the writer lock
    files.py         durable writes and the crash seam the kill -9 tests use
    integrity.py     check and repair a whole library (damaged files go to quarantine/, never deleted)
    store.py         LibraryStore, the one class composing them (what the index engines, search and ask open)
    store_index.py   LibraryStore's search-index side: publish, check against the catalog, search
"""

from videomini.storage.catalog import ACTIONS, CATALOG, FORMAT_VERSION, STATUSES, PlanItem, fingerprint
from videomini.storage.errors import LibraryBusy, LibraryError
from videomini.storage.hits import Hit, Moment, TextHit, moments
from videomini.storage.manifest import MANIFEST, compaction_due
from videomini.storage.shards import SHARDS, VideoFrames
from videomini.storage.store import LibraryStore
from videomini.storage.vector_index import FLAT_MAX_VECTORS, IndexSpec, build_index, index_spec_for

__all__ = ["ACTIONS", "CATALOG", "FLAT_MAX_VECTORS", "FORMAT_VERSION", "MANIFEST", "SHARDS", "STATUSES", "Hit",
           "IndexSpec", "LibraryBusy", "LibraryError", "LibraryStore", "Moment", "PlanItem", "TextHit",
           "VideoFrames", "build_index", "compaction_due", "fingerprint", "index_spec_for", "moments"]
