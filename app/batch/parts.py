"""The parts of one output, written as chunks finish, and how an interrupted run resumes.

Beside the output ``OUT`` lives ``OUT.parts/`` (same filesystem, local or S3):

* ``manifest.json``: the run's key (a hash of the input's fingerprint, the model tag and
  sha256, the runtime and every option that changes the output) and what it stands for;
* ``part-000012.<ext>``: chunk 12's output rows, written atomically (and synced to disk);
* ``part-000012.json``: chunk 12's figures, written after its part: it marks the chunk done.

A run finding a manifest with its own key skips the chunks marked done; with another key (the
input or an option changed) the folder is emptied and the run starts over. When every chunk
is done the parts are joined, in chunk order, into ``OUT`` (atomically), the summary is
written beside it and the folder removed. So a run killed at any moment and started again with
the same arguments scores each row into the output exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import pyarrow as pa

from app.batch.options import Format
from app.batch.storage import Location, atomic_writer, write_bytes
from app.batch.summary import ChunkStats
from app.batch.writing import assemble, encode, part_extension

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_DONE = re.compile(r"part-(\d{6,})\.json$")


def run_key(description: Mapping[str, Any]) -> str:
    payload = orjson.dumps({"version": FORMAT_VERSION, **description}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


class PartStore:
    """``<output>.parts/``: writes parts and their records, lists the finished ones."""

    def __init__(self, output: Location, fmt: Format) -> None:
        self.output = output
        self.format = fmt
        self.folder = output.sibling(".parts")
        self._extension = part_extension(fmt)

    def _part(self, index: int) -> str:
        return self.folder.child(f"part-{index:06d}.{self._extension}")

    def _record(self, index: int) -> str:
        return self.folder.child(f"part-{index:06d}.json")

    # -- the main process --------------------------------------------------------
    def resume(self, key: str, description: Mapping[str, Any]) -> dict[int, ChunkStats]:
        """The chunks already done by an earlier run of the same key (none for a new run)."""
        fs = self.folder.fs
        manifest_path = self.folder.child(MANIFEST)
        if self.folder.exists():
            try:
                manifest = orjson.loads(fs.cat_file(manifest_path))
            except (FileNotFoundError, orjson.JSONDecodeError):
                manifest = {}
            if manifest.get("key") == key:
                done = self.finished()
                if done:
                    logger.info("resuming: %d chunk(s) already scored", len(done))
                return done
            logger.info("parts in %s belong to another run: starting over", self.folder.url)
            fs.rm(self.folder.path, recursive=True)
        manifest = {
            "key": key,
            "run": dict(description),
            "created_at": datetime.now(UTC).isoformat(),
        }
        write_bytes(fs, manifest_path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return {}

    def finished(self) -> dict[int, ChunkStats]:
        fs = self.folder.fs
        fs.invalidate_cache(self.folder.path)
        names = [str(p).rsplit("/", 1)[-1] for p in fs.ls(self.folder.path, detail=False)]
        indices = sorted(int(m.group(1)) for name in names if (m := _DONE.fullmatch(name)))
        if not indices:
            return {}
        paths = [self._record(index) for index in indices]
        contents = fs.cat(paths) if not self.folder.local else {p: fs.cat_file(p) for p in paths}
        found = {fs._strip_protocol(k): v for k, v in contents.items()}
        done = {}
        for index, path in zip(indices, paths, strict=True):
            try:
                done[index] = ChunkStats.from_json(orjson.loads(found[fs._strip_protocol(path)]))
            except (KeyError, TypeError, orjson.JSONDecodeError):
                continue  # a record lost to a crash: the chunk is scored again
        return done

    def assemble(self, indices: list[int], empty: pa.Table) -> None:
        """Join the parts of ``indices`` (in that order) into the output, atomically."""
        fs = self.folder.fs

        def opener(index: int) -> Callable[[], IO[bytes]]:
            return lambda: fs.open(self._part(index), "rb")

        with atomic_writer(self.output.fs, self.output.path) as out:
            assemble([opener(i) for i in indices], self.format, out, empty)

    def remove(self) -> None:
        self.folder.fs.rm(self.folder.path, recursive=True)

    # -- any process (the workers write their own parts) --------------------------------
    def write(self, table: pa.Table, stats: ChunkStats) -> None:
        fs = self.folder.fs
        write_bytes(fs, self._part(stats.index), encode(table, self.format))
        # Not synced: a record lost to a machine crash only means the chunk is scored again.
        write_bytes(fs, self._record(stats.index), orjson.dumps(stats.to_json()), sync=False)
