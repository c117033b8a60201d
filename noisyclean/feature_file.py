"""Features the user brings: a Parquet file of ``id`` → ``embedding`` (CLIP, DINOv2, …).

``score --features FILE`` reads it in place of a backbone. The file has an ``id``
column (joined to the manifest's ids; a manifest without ids has row numbers) and an
``embedding`` column, a list or fixed-size list of float16 or float32; a ``status``
column (``ok``, ``missing``, ``unreadable``) is optional. A manifest row the file lacks,
or whose embedding is null, gets status ``missing`` (or the file's own status).

The file is read column-wise with pyarrow, without a Python object per value, and
conf.parquet records its path and stamp (size and modification time), so ``train``
reads the same file again and refuses one that changed since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from noisyclean.errors import NoisyCleanError
from noisyclean.features import Features
from noisyclean.manifest import STATUSES, Manifest

#: Called with (rows done, rows) once the file is read and checked.
Progress = Callable[[int, int], None]

#: What conf.parquet and the run record as the backbone of a run on a features file.
BACKBONE = "features"

_FLOATS = (pa.float16(), pa.float32())


class FeatureFileError(NoisyCleanError):
    """A features file that can't be used."""


def stamp_of(path: Path) -> str:
    """The file's size and modification time: a different stamp means another file."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class FeatureFile:
    """A user's features file, to be joined to a manifest by id.

    Attributes:
        path: the Parquet file.
        stamp: its size and modification time when it was read (or recorded).
    """

    path: Path
    stamp: str

    backbone = BACKBONE

    @classmethod
    def open(cls, path: Path) -> FeatureFile:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise FeatureFileError(f"{path}: no such features file")
        return cls(path=path, stamp=stamp_of(path))

    @classmethod
    def recorded(cls, path: Path, stamp: str) -> FeatureFile:
        """The features file a conf.parquet names, refused if it changed since."""
        if not Path(path).is_file():
            raise FeatureFileError(f"{path}: the features file `score` read is gone")
        if stamp and stamp_of(path) != stamp:
            raise FeatureFileError(
                f"{path}: the features file changed since `noisyclean score` read it; rerun score"
            )
        return cls(path=Path(path), stamp=stamp)

    def load(self, manifest: Manifest, *, progress: Progress | None = None) -> Features:
        """One feature vector per manifest row, in manifest order.

        Raises:
            FeatureFileError: one line naming the file and the row or column: not
                Parquet, no ``id``/``embedding`` column, an embedding of another type or
                width, a NaN, a duplicate id, an unknown status.
        """
        table = self._read()
        where = self.path.name
        ids = table.column("id").cast(pa.string()).combine_chunks()
        if ids.null_count:
            row = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
            raise FeatureFileError(f"{where} row {row + 1}: empty id")
        file_ids = pd.Index(ids.to_pandas())
        if not file_ids.is_unique:
            row = int(np.flatnonzero(file_ids.duplicated())[0])
            raise FeatureFileError(f"{where} row {row + 1}: duplicate id '{file_ids[row]}'")
        values, has = _embeddings(table.column("embedding"), where)
        status = np.where(has, "ok", "missing").astype(object)
        if "status" in table.column_names:
            given = table.column("status").cast(pa.string()).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~pd.isna(given) & ~np.isin(given, STATUSES))
            if len(bad):
                raise FeatureFileError(
                    f"{where} row {bad[0] + 1}: status '{given[bad[0]]}', expected one of "
                    f"{', '.join(STATUSES)}"
                )
            status = np.where(pd.isna(given) | (given == "ok"), status, given)

        at = file_ids.get_indexer(manifest.frame["id"].to_numpy(dtype=object))
        found = at >= 0
        out_status = np.full(len(manifest), "missing", dtype=object)
        out_status[found] = status[at[found]]
        ok = out_status == "ok"
        dim = values.shape[1]
        out = np.zeros((len(manifest), dim), dtype=np.float32)
        # Row of each usable file row among the file's non-null embeddings.
        position = np.cumsum(has) - 1
        rows = np.flatnonzero(ok)
        for start in range(0, len(rows), 65_536):
            part = rows[start : start + 65_536]
            out[part] = values[position[at[part]]]
        if progress:  # once checked: a bad file prints its one line and nothing else
            progress(len(manifest), len(manifest))
        return Features(
            values=out, status=out_status.astype(str), computed=0, image_size=0, reasons={}
        )

    def _read(self) -> pa.Table:
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise FeatureFileError(f"{self.path}: not a Parquet file ({first})") from None
        names = pf.schema_arrow.names
        for col in ("id", "embedding"):
            if col not in names:
                raise FeatureFileError(
                    f"{self.path}: no '{col}' column (columns found: {', '.join(names)})"
                )
        columns = ["id", "embedding"] + (["status"] if "status" in names else [])
        return pf.read(columns=columns)


def _embeddings(column: pa.ChunkedArray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``embedding`` column as an (R, D) array of its R non-null rows, and the (N,)
    mask of those rows; float16 stays float16 (converted in batches by the caller)."""
    kind = column.type
    if (
        not (
            pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)
        )
        or kind.value_type not in _FLOATS
    ):
        raise FeatureFileError(
            f"{where}: column 'embedding' is {kind}, expected a list of float16 or float32"
        )
    col = column.combine_chunks()
    has = ~pc.is_null(col).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    if not has.any():
        raise FeatureFileError(f"{where}: column 'embedding' has no values")
    dim = int(lengths[has][0])
    bad = np.flatnonzero(has & (lengths != dim))
    if len(bad):
        raise FeatureFileError(
            f"{where} row {bad[0] + 1}: an embedding of {lengths[bad[0]]} values, expected "
            f"{dim} (the width of row {int(np.flatnonzero(has)[0]) + 1})"
        )
    if dim == 0:
        raise FeatureFileError(f"{where}: embeddings of width 0")
    flat = col.flatten()
    if flat.null_count:
        owner = np.repeat(np.arange(len(lengths)), lengths)
        row = owner[np.flatnonzero(pc.is_null(flat).to_numpy(zero_copy_only=False))[0]]
        raise FeatureFileError(f"{where} row {row + 1}: a null value inside the embedding")
    values = flat.to_numpy(zero_copy_only=False).reshape(-1, dim)
    nan = ~np.isfinite(values).all(axis=1)
    if nan.any():
        row = int(np.flatnonzero(has)[np.flatnonzero(nan)[0]])
        raise FeatureFileError(f"{where} row {row + 1}: NaN or infinity in the embedding")
    return values, has


def write_feature_file(path: Path, ids: np.ndarray, values: np.ndarray) -> None:
    """Write ``ids`` and their (N, D) ``values`` as a features file (float16 or float32
    kept), atomically: what ``score --features`` reads. For tests and the benchmark."""
    from noisyclean.artifacts import atomic_path

    values = np.ascontiguousarray(values)
    kind = pa.float16() if values.dtype == np.float16 else pa.float32()
    flat = pa.array(values.reshape(-1).astype(kind.to_pandas_dtype()), type=kind)
    table = pa.table(
        {
            "id": pa.array(np.asarray(ids).astype(str), type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, values.shape[1]),
        }
    )
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)
