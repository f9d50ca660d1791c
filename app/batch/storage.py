"""Where batch input and output live: local paths or fsspec URLs (``s3://...``).

A URL of the registry's protocol gets the registry's storage options
(``ML_API_REGISTRY_STORAGE_OPTIONS``), so one set of S3 settings serves models and data. Files
are written so a reader sees the old content or the new, never half of one: a local file is
written aside and renamed, an object store commits an upload only when it is complete.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from app.registry.store import storage_options_for


class Location:
    """One file (or folder) behind an fsspec URL, with its filesystem."""

    def __init__(self, url: str, registry_url: str, registry_options: Mapping[str, Any]) -> None:
        protocol, _ = fsspec.core.split_protocol(url)
        registry_protocol, _ = fsspec.core.split_protocol(registry_url)
        same = (protocol or "file") == (registry_protocol or "file")
        options = storage_options_for(url, registry_options if same else None)
        fs, path = fsspec.core.url_to_fs(url, **options)
        self.url = url
        self.fs: fsspec.AbstractFileSystem = fs
        self.path: str = path
        self.local = isinstance(fs, LocalFileSystem)
        self._registry = (registry_url, dict(registry_options))

    def sibling(self, suffix: str) -> Location:
        """The location ``<this url><suffix>`` (e.g. ``.summary.json`` beside an output)."""
        return Location(self.url + suffix, *self._registry)

    def child(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def exists(self) -> bool:
        self.fs.invalidate_cache(self.path)
        return bool(self.fs.exists(self.path))

    def fingerprint(self) -> str:
        """Changes whenever the file does: size and modification time locally, the ETag on
        S3 (fsspec's ``ukey``)."""
        self.fs.invalidate_cache(self.path)
        return str(self.fs.ukey(self.path))

    def size(self) -> int:
        return int(self.fs.size(self.path))


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (on an object store, one PUT)."""
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        fs.invalidate_cache(path)
        return
    with atomic_writer(fs, path, sync) as handle:
        handle.write(data)


@contextmanager
def atomic_writer(
    fs: fsspec.AbstractFileSystem, path: str, sync: bool = True
) -> Iterator[IO[bytes]]:
    """A binary file whose content appears at ``path`` only when the block ends without an
    error; on an error nothing is left behind. ``sync``: a local file reaches the disk before
    it appears (so a machine crash cannot leave a named but empty file)."""
    if isinstance(fs, LocalFileSystem):
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would have made it, not mkstemp's 0600
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    remote = fs.open(path, "wb", autocommit=False)
    try:
        yield remote
        remote.close()
        remote.commit()
    except BaseException:
        remote.discard()
        raise
    finally:
        fs.invalidate_cache(path)
