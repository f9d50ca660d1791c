"""The model registry over any fsspec URL: a local folder or an S3 bucket, same layout.

Layout::

    <root>/experiments/<tag>/model.skops   the fitted pipeline (skops format)
    <root>/experiments/<tag>/meta.json     ExperimentMeta; written last, so it marks "published"
    <root>/deployment.json                 DeploymentRecord: the spec of what serves, in which role
    <root>/active.json                     ActivePointer: the primary, for readers of the older
                                           format (a registry with only this file still works)
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from app.errors import (
    BrokenExperiment,
    ExperimentExists,
    ExperimentNotFound,
    RegistryUnavailable,
)
from app.registry.meta import (
    ActivePointer,
    ExperimentMeta,
    ExperimentSummary,
    validate_tag,
)
from app.registry.spec import DeploymentRecord, SpecBody

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
ACTIVE_FILE = "active.json"
DEPLOYMENT_FILE = "deployment.json"
EXPERIMENTS_DIR = "experiments"
# How long a listing of experiment folders is reused: new experiments show up this late, and
# a registry of hundreds is not listed again on every call.
LISTING_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class ExperimentPage:
    """One page of the listing, and how many experiments match the filters in all."""

    total: int
    experiments: list[ExperimentSummary]


# botocore makes 5 attempts, with back-off, inside each of s3fs's 5 tries, with a 60 s connect
# timeout: a refused connection held every read for about 7 s (a swap during an outage answered
# 503 only after ~10 s), a black-holed endpoint for minutes. With 2 attempts and a 2 s connect
# timeout a refused read gives up in about 1 s; s3fs still retries dropped connections itself.
DEFAULT_STORAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        "config_kwargs": {
            "connect_timeout": 2,
            "read_timeout": 30,
            "retries": {"total_max_attempts": 2, "mode": "standard"},
        }
    },
}


def storage_options_for(url: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: the defaults of its protocol, each key replaced by
    ``overrides`` (``ML_API_REGISTRY_STORAGE_OPTIONS``) when given there."""
    protocol, _ = fsspec.core.split_protocol(url)
    # A copy: botocore rewrites the retries dict it is given (max_attempts -> total_max_attempts).
    defaults = copy.deepcopy(DEFAULT_STORAGE_OPTIONS.get(protocol or "file", {}))
    return {**defaults, **(overrides or {})}


class ModelRegistry:
    """Reads and writes experiments and the active pointer; knows nothing of serving."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **storage_options_for(url, storage_options))
        self._fs: fsspec.AbstractFileSystem = fs
        self._root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        # Experiments are immutable: a summary read once is valid for good.
        self._summaries: dict[str, ExperimentSummary] = {}
        self._listing: tuple[float, list[str]] | None = None
        self._cache_lock = threading.Lock()

    # -- paths -------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join([self._root, *parts])

    def _experiment_path(self, tag: str, name: str | None = None) -> str:
        parts = [EXPERIMENTS_DIR, validate_tag(tag)]
        if name is not None:
            parts.append(name)
        return self._path(*parts)

    # -- low level ---------------------------------------------------------------------
    def _read(self, path: str) -> bytes:
        try:
            data: bytes = self._fs.cat_file(path)
        except FileNotFoundError:
            raise
        except Exception as exc:  # any transport error means storage is out of reach
            raise RegistryUnavailable(f"registry unreachable while reading {path}: {exc}") from exc
        return data

    def _exists(self, path: str) -> bool:
        try:
            self._fs.invalidate_cache(path)
            return bool(self._fs.exists(path))
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc}") from exc

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Write so that readers see the old content or the new, never a half-written file.

        Object stores make a PUT atomic already; on a local disk write aside then rename.
        """
        try:
            if self._local:
                directory = os.path.dirname(path)
                os.makedirs(directory, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                    raise
            else:
                self._fs.pipe_file(path, data)
                self._fs.invalidate_cache(path)
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable while writing {path}: {exc}") from exc

    # -- experiments -------------------------------------------------------------------
    def list_tags(self) -> list[str]:
        """Tags of published experiments (those whose meta.json exists)."""
        base = self._path(EXPERIMENTS_DIR)
        try:
            self._fs.invalidate_cache(base)
            if not self._fs.exists(base):
                return []
            entries = self._fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable while listing: {exc}") from exc
        tags = []
        for entry in entries:
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            try:
                validate_tag(name)
            except Exception:
                logger.warning("ignoring registry entry with an invalid tag name: %r", name)
                continue
            tags.append(name)
        return sorted(tags)

    def read_meta(self, tag: str) -> ExperimentMeta:
        path = self._experiment_path(tag, META_FILE)
        try:
            raw = self._read(path)
        except FileNotFoundError:
            raise ExperimentNotFound(f"no experiment with tag {tag!r} in the registry") from None
        return self._parse_meta(tag, raw)

    @staticmethod
    def _parse_meta(tag: str, raw: bytes) -> ExperimentMeta:
        try:
            meta = ExperimentMeta.model_validate_json(raw)
        except ValidationError as exc:
            raise BrokenExperiment(f"experiment {tag!r}: meta.json is invalid: {exc}") from exc
        if meta.tag != tag:
            raise BrokenExperiment(f"experiment {tag!r}: meta.json names tag {meta.tag!r}")
        return meta

    def read_model_bytes(self, meta: ExperimentMeta) -> bytes:
        return self.read_file(meta.tag, meta.model_file)

    def list_experiments(
        self,
        *,
        model_type: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        max_age_seconds: float = LISTING_TTL_SECONDS,
    ) -> ExperimentPage:
        """Published experiments, newest first, optionally of one model type, paged.

        Each experiment's metadata is read once and kept (experiments are immutable); the
        folder listing itself is reused for ``max_age_seconds``. Broken experiments are listed
        with their error (and read again next time, in case someone repairs them).
        """
        summaries = self._summaries_of(self._listed_tags(max_age_seconds))
        if model_type is not None:
            summaries = [s for s in summaries if s.model_type == model_type]
        epoch = datetime.min.replace(tzinfo=UTC)
        summaries.sort(key=lambda s: (s.created_at or epoch, s.tag), reverse=True)
        end = None if limit is None else offset + limit
        return ExperimentPage(total=len(summaries), experiments=summaries[offset:end])

    def _listed_tags(self, max_age_seconds: float) -> list[str]:
        now = time.monotonic()
        with self._cache_lock:
            cached = self._listing
        if cached is not None and now - cached[0] < max_age_seconds:
            return cached[1]
        tags = self.list_tags()
        with self._cache_lock:
            self._listing = (now, tags)
        return tags

    def _summaries_of(self, tags: list[str]) -> list[ExperimentSummary]:
        with self._cache_lock:
            known = {tag: self._summaries[tag] for tag in tags if tag in self._summaries}
        unknown = [tag for tag in tags if tag not in known]
        for tag, summary in self._read_summaries(unknown).items():
            known[tag] = summary
            if not summary.broken:
                with self._cache_lock:
                    self._summaries[tag] = summary
        return [known[tag] for tag in tags if tag in known]

    def _read_summaries(self, tags: list[str]) -> dict[str, ExperimentSummary]:
        """Summaries of ``tags`` whose meta.json exists; one concurrent batch on object stores."""
        if not tags:
            return {}
        paths = {self._experiment_path(tag, META_FILE): tag for tag in tags}
        try:
            contents = self._cat_many(paths)
        except Exception as exc:
            raise RegistryUnavailable(f"registry unreachable while listing: {exc}") from exc
        summaries: dict[str, ExperimentSummary] = {}
        for path, raw in contents.items():
            tag = paths[path]
            if isinstance(raw, FileNotFoundError):
                continue  # a folder without meta.json is a publish in progress
            if isinstance(raw, BaseException):
                raise RegistryUnavailable(f"registry unreachable while reading {path}: {raw}")
            try:
                summaries[tag] = ExperimentSummary.of(self._parse_meta(tag, raw))
            except BrokenExperiment as exc:
                summaries[tag] = ExperimentSummary(tag=tag, broken=True, error=exc.message)
        return summaries

    def _cat_many(self, paths: Mapping[str, str]) -> dict[str, bytes | BaseException]:
        if self._local:
            result: dict[str, bytes | BaseException] = {}
            for path in paths:
                try:
                    result[path] = self._fs.cat_file(path)
                except FileNotFoundError as exc:
                    result[path] = exc
            return result
        found: dict[str, bytes | BaseException] = self._fs.cat(list(paths), on_error="return")
        return {self._fs._strip_protocol(k) if k not in paths else k: v for k, v in found.items()}

    def read_file(self, tag: str, name: str) -> bytes:
        """Another artifact of an experiment (e.g. its ONNX copy)."""
        try:
            return self._read(self._experiment_path(tag, name))
        except FileNotFoundError:
            raise BrokenExperiment(f"experiment {tag!r}: {name} is missing") from None

    def write_experiment(
        self,
        meta: ExperimentMeta,
        model_bytes: bytes,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> None:
        """Publish once: artifacts first, meta.json last. An existing experiment is never
        replaced."""
        if self._exists(self._experiment_path(meta.tag, META_FILE)):
            raise ExperimentExists(f"experiment {meta.tag!r} is already published")
        self._write_atomic(self._experiment_path(meta.tag, meta.model_file), model_bytes)
        for name, data in (extra_files or {}).items():
            self._write_atomic(self._experiment_path(meta.tag, name), data)
        payload = meta.model_dump_json(indent=2).encode()
        self._write_atomic(self._experiment_path(meta.tag, META_FILE), payload)

    # -- active pointer ----------------------------------------------------------------
    def read_active(self) -> ActivePointer | None:
        """The active pointer, None when none was ever written.

        Raises RegistryUnavailable when storage is out of reach and BrokenExperiment when
        the pointer exists but cannot be parsed.
        """
        try:
            raw = self._read(self._path(ACTIVE_FILE))
        except FileNotFoundError:
            return None
        try:
            return ActivePointer.model_validate_json(raw)
        except ValidationError as exc:
            raise BrokenExperiment(f"active.json is unreadable: {exc}") from exc

    def read_active_or_none(self) -> ActivePointer | None:
        try:
            return self.read_active()
        except BrokenExperiment as exc:
            logger.error("%s", exc.message)
            return None

    def write_active(self, tag: str, *, updated_by: str, previous_tag: str | None) -> ActivePointer:
        validate_tag(tag)
        pointer = ActivePointer(
            tag=tag,
            updated_at=datetime.now(UTC),
            updated_by=updated_by,
            previous_tag=previous_tag,
        )
        self._write_atomic(self._path(ACTIVE_FILE), pointer.model_dump_json(indent=2).encode())
        return pointer

    # -- deployment spec ---------------------------------------------------------------
    def read_deployment(self) -> DeploymentRecord | None:
        """The deployment spec; from ``active.json`` when only that older file exists; None
        when neither was ever written.

        Raises RegistryUnavailable when storage is out of reach and BrokenExperiment when the
        file exists but cannot be parsed (never falling back to ``active.json`` then: that
        could silently change what serves).
        """
        try:
            raw = self._read(self._path(DEPLOYMENT_FILE))
        except FileNotFoundError:
            return self._legacy_deployment()
        try:
            return DeploymentRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise BrokenExperiment(f"deployment.json is unreadable: {exc}") from exc

    def _legacy_deployment(self) -> DeploymentRecord | None:
        pointer = self.read_active()
        if pointer is None:
            return None
        previous = None if pointer.previous_tag is None else SpecBody(primary=pointer.previous_tag)
        return DeploymentRecord(
            spec=SpecBody(primary=pointer.tag),
            revision=0,
            updated_at=pointer.updated_at,
            updated_by=pointer.updated_by,
            action="initial",
            previous=previous,
        )

    def write_deployment(self, record: DeploymentRecord) -> None:
        """Write the spec atomically, then mirror its primary into ``active.json`` for readers
        of the older format (a replica of the previous version during a rolling upgrade)."""
        self._write_atomic(self._path(DEPLOYMENT_FILE), record.model_dump_json(indent=2).encode())
        previous = record.previous.primary if record.previous is not None else None
        pointer = ActivePointer(
            tag=record.spec.primary,
            updated_at=record.updated_at,
            updated_by=record.updated_by,
            previous_tag=previous,
        )
        self._write_atomic(self._path(ACTIVE_FILE), pointer.model_dump_json(indent=2).encode())
