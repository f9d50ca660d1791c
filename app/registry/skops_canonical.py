"""Byte-reproducible skops files: the same fitted model gives the same bytes in every process.

A skops file is a zip archive: ``schema.json`` (the object tree) and one file per array or
bytes object. Three things in it change from one process to the next although the model does
not:

* every node carries ``__id__``, the ``id()`` (memory address) of the object it was made
  from, and arrays are stored as ``<id>.npy`` (bytes objects as ``<uuid4>.bin``);
* every zip entry is stamped with the wall-clock time it was written (and the arrays of a
  sparse matrix sit in an inner ``.npz`` zip with its own time stamps);
* set members are written in iteration order, which for strings follows the per-process hash
  salt (``PYTHONHASHSEED``); so are the members of a frozenset (stored as a list).

:func:`canonical_skops` rewrites those and nothing else: ids are renumbered 1, 2, 3... in the
order the tree first names them (a one-to-one renaming, so objects shared in the model stay
shared when loaded), member files are renamed in the same way, set members are sorted by their
content, and every entry gets a fixed time, permissions and order. Arrays, dict and list order
and every value are kept as they are, so the model loads and predicts exactly as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from app.errors import ModelRejected

SCHEMA_ENTRY = "schema.json"
# The earliest time a zip entry can carry (MS-DOS epoch), as reproducible-build tools use.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# A regular file, rw-r--r--, made on Unix: the same on every platform.
FILE_ATTRIBUTES = 0o100644 << 16
UNIX = 3

Node = dict[str, Any]


def canonical_skops(data: bytes) -> bytes:
    """``data`` (a skops file) rewritten so that equal models give equal bytes.

    Raises ModelRejected when ``data`` is not a skops archive this function understands
    (no ``schema.json``, or a node naming a file the archive does not hold).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read(SCHEMA_ENTRY))
            members = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelRejected(f"not a skops file: {exc}") from exc
    del members[SCHEMA_ENTRY]
    _sort_set_members(schema, members)
    renamed = _Renumbering(members)
    schema = renamed.apply(schema)
    files = {new: _canonical_member(new, members[old]) for old, new in renamed.file_names.items()}
    return write_archive({**files, SCHEMA_ENTRY: json.dumps(schema, indent=2).encode()})


def write_archive(entries: dict[str, bytes]) -> bytes:
    """A stored (uncompressed) zip of ``entries`` in name order, with fixed metadata."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = UNIX
            info.external_attr = FILE_ATTRIBUTES
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def _canonical_member(name: str, content: bytes) -> bytes:
    # A sparse matrix is saved with numpy's savez: a zip inside the zip, time-stamped too.
    if not name.endswith(".npz"):
        return content
    with zipfile.ZipFile(io.BytesIO(content)) as inner:
        entries = {info.filename: inner.read(info) for info in inner.infolist()}
    return write_archive(entries)


def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and "__loader__" in value


def _walk(value: Any, visit: Callable[[Node], None]) -> None:
    """Call ``visit`` on every node, parents before children, in document order."""
    if isinstance(value, dict):
        if _is_node(value):
            visit(value)
        for child in value.values():
            _walk(child, visit)
    elif isinstance(value, list):
        for child in value:
            _walk(child, visit)


def _sort_set_members(schema: Node, members: dict[str, bytes]) -> None:
    """Put the members of every set and frozenset in an order that depends on content only."""

    def visit(node: Node) -> None:
        if node.get("__module__") != "builtins":
            return
        if node.get("__loader__") == "SetNode" and node.get("__class__") == "set":
            node["content"] = sorted(node["content"], key=lambda m: _content_key(m, members))
        elif (
            node.get("__loader__") == "ConstructorFromReduceNode"
            and node.get("__class__") == "frozenset"
        ):
            # frozenset.__reduce__() is (frozenset, ([members],)): a tuple holding one list.
            arguments = node.get("content", {}).get("content")
            if isinstance(arguments, list) and len(arguments) == 1 and _is_node(arguments[0]):
                listed = arguments[0]
                listed["content"] = sorted(
                    listed["content"], key=lambda m: _content_key(m, members)
                )

    _walk(schema, visit)


def _content_key(node: Any, members: dict[str, bytes]) -> str:
    """What a node holds, without the ids and file names that change from run to run."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            stripped = {k: strip(v) for k, v in value.items() if k != "__id__"}
            if _is_node(value) and isinstance(value.get("file"), str):
                stripped["file"] = hashlib.sha256(members.get(value["file"], b"")).hexdigest()
            return stripped
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(node), sort_keys=True)


class _Renumbering:
    """Object ids and member file names renamed in order of first appearance."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self._members = members
        self.ids: dict[int, int] = {}
        self.file_names: dict[str, str] = {}

    def apply(self, schema: Node) -> Node:
        _walk(schema, self._visit)
        return schema

    def _visit(self, node: Node) -> None:
        if "__id__" in node:
            # Ids start at 1: skops treats a saved id of 0 as "no id" and would not share it.
            old_id = node["__id__"]
            node["__id__"] = self.ids.setdefault(old_id, len(self.ids) + 1)
        name = node.get("file")
        if isinstance(name, str):
            if name not in self._members:
                raise ModelRejected(f"not a skops file: node names a missing member {name!r}")
            suffix = PurePosixPath(name).suffix
            node["file"] = self.file_names.setdefault(name, f"{len(self.file_names) + 1}{suffix}")
