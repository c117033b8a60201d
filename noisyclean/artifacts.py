"""Every output file's schema and metadata, and atomic writes.

Parquet key-value metadata holds strings; the keys in ``_JSON_KEYS`` are stored as
JSON and decoded on read, every other value is a plain string.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from noisyclean import __version__
from noisyclean.errors import NoisyCleanError

_JSON_KEYS = {"classes", "image_size", "folds", "seed", "blend", "k", "run_id_config"}

CONF_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("status", pa.string()),
        ("split", pa.string()),
        ("confidence", pa.float32()),
        ("pred_label", pa.string()),
        ("pred_confidence", pa.float32()),
        ("confidences", pa.list_(pa.float32())),
        ("fold", pa.int32()),
    ]
)

EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),
        ("embedding", pa.list_(pa.float32())),
    ]
)

SUSPECTS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("suggested_label", pa.string()),
        ("suspicion", pa.float32()),
        ("confidence", pa.float32()),
        ("neighbour_agreement", pa.float32()),
        ("neighbours", pa.list_(pa.string())),
        ("neighbours_suggested", pa.list_(pa.string())),
        ("is_suspect", pa.bool_()),
        ("rank", pa.int64()),
        ("status", pa.string()),
        ("neighbours_given", pa.list_(pa.string())),
    ]
)


def list_column(values: np.ndarray, usable: np.ndarray) -> list[list[float] | None]:
    """(N, D) rows as a list<float32> column: one list per usable row, None for the rest."""
    return [list(v) if u else None for v, u in zip(values, usable, strict=True)]


class ArtifactError(NoisyCleanError):
    """An input file that is not the noisyclean output it should be."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _encode(meta: Mapping[str, Any]) -> dict[bytes, bytes]:
    out = {b"noisyclean_version": __version__.encode()}
    for key, value in meta.items():
        text = json.dumps(value) if key in _JSON_KEYS else str(value)
        out[key.encode()] = text.encode()
    return out


def _decode(raw: Mapping[bytes, bytes] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kb, vb in (raw or {}).items():
        key, value = kb.decode(), vb.decode()
        if key == "pandas" or key.startswith("ARROW:"):
            continue
        out[key] = json.loads(value) if key in _JSON_KEYS else value
    return out


def write_parquet(
    path: Path,
    frame: pd.DataFrame,
    *,
    schema: pa.Schema,
    metadata: Mapping[str, Any],
) -> None:
    """Write ``frame`` with ``schema``'s columns first (extra columns follow), atomically."""
    fields = list(schema) + [
        pa.field(c, pa.Schema.from_pandas(frame[[c]], preserve_index=False).field(c).type)
        for c in frame.columns
        if c not in schema.names
    ]
    full = pa.schema(fields)
    table = pa.Table.from_pandas(frame[full.names], schema=full, preserve_index=False)
    table = table.replace_schema_metadata(_encode(metadata))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: Path, *, required: pa.Schema) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a noisyclean Parquet output and its decoded metadata; check its columns."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ArtifactError(f"{path}: not a Parquet file ({str(err).splitlines()[0]})") from None
    missing = [n for n in required.names if n not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}")
    return table.to_pandas(), _decode(table.schema.metadata)
