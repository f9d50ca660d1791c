"""Batch scoring: ``ml-api score INPUT OUTPUT`` scores a whole file with a registry model.

The input (CSV, Parquet or JSON Lines; a local path or an fsspec URL such as ``s3://``) is
read in chunks of a fixed number of rows, so memory stays bounded whatever its size. Each
chunk is validated by the rules of ``/predict``, scored (in this process or in worker
processes) and written as a part beside the output; a run that is interrupted resumes from the
parts already written, and the parts are joined in input order at the end.

Modules: ``options`` (what a run is asked), ``storage`` (URLs, atomic writes), ``reading``
(chunks), ``validation`` (vectorised checks, exact per-row fallback), ``scoring`` (one chunk's
output table), ``writing`` (formats), ``parts`` (resume), ``engine`` (in-process or worker
processes), ``progress``, ``summary``, ``run`` (one run, start to end).
"""

from app.batch.options import DEFAULT_CHUNK_ROWS, FORMATS, Format, ScoreOptions, Shard, parse_keep
from app.batch.run import score_file

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "FORMATS",
    "Format",
    "ScoreOptions",
    "Shard",
    "parse_keep",
    "score_file",
]
