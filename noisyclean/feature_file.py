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

        The ids are read first; the embeddings then stream in batches of
        ``BATCH_ROWS`` straight into the (N, D) float32 output, so the file's own
        values are never all in memory beside it.

        Raises:
            FeatureFileError: one line naming the file and the row or column: not
                Parquet, no ``id``/``embedding`` column, an embedding of another type or
                width, a NaN, a duplicate id, an unknown status.
        """
        pf = self._open()
        where = self.path.name
        names = pf.schema_arrow.names
        _check_type(pf.schema_arrow.field("embedding").type, where)
        head = pf.read(columns=["id"] + (["status"] if "status" in names else []))
        ids = head.column("id").cast(pa.string()).combine_chunks()
        if ids.null_count:
            row = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
            raise FeatureFileError(f"{where} row {row + 1}: empty id")
        file_ids = pd.Index(ids.to_pandas())
        if not file_ids.is_unique:
            row = int(np.flatnonzero(file_ids.duplicated())[0])
            raise FeatureFileError(f"{where} row {row + 1}: duplicate id '{file_ids[row]}'")
        given: np.ndarray | None = None
        if "status" in names:
            given = head.column("status").cast(pa.string()).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~pd.isna(given) & ~np.isin(given, STATUSES))
            if len(bad):
                raise FeatureFileError(
                    f"{where} row {bad[0] + 1}: status '{given[bad[0]]}', expected one of "
                    f"{', '.join(STATUSES)}"
                )
        del head, ids

        at = file_ids.get_indexer(manifest.frame["id"].to_numpy(dtype=object))
        target = np.full(len(file_ids), -1, dtype=np.int64)  # file row -> manifest row
        target[at[at >= 0]] = np.flatnonzero(at >= 0)
        has = np.zeros(len(file_ids), dtype=bool)
        out: np.ndarray | None = None
        width: tuple[int, int] | None = None  # (dim, the file row that set it)
        start = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["embedding"]):
            values, present, width = _embeddings(batch.column(0), where, start, width)
            stop = start + batch.num_rows
            has[start:stop] = present
            if width is None:
                start = stop
                continue  # no embedding yet: nothing to place
            if out is None:
                out = np.zeros((len(manifest), width[0]), dtype=np.float32)
            dest = target[start:stop]
            take = present & (dest >= 0)
            out[dest[take]] = values[(np.cumsum(present) - 1)[take]]
            start = stop
        if out is None or width is None:
            raise FeatureFileError(f"{where}: column 'embedding' has no values")

        status = np.where(has, "ok", "missing").astype(object)
        if given is not None:
            status = np.where(pd.isna(given) | (given == "ok"), status, given)
        found = at >= 0
        out_status = np.full(len(manifest), "missing", dtype=object)
        out_status[found] = status[at[found]]
        out[out_status != "ok"] = 0.0  # the file's own unusable rows carry no features
        if progress:  # once checked: a bad file prints its one line and nothing else
            progress(len(manifest), len(manifest))
        return Features(
            values=out, status=out_status.astype(str), computed=0, image_size=0, reasons={}
        )

    def _open(self) -> pq.ParquetFile:
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
        return pf


#: Rows of embeddings read at a time.
BATCH_ROWS = 65_536


def _check_type(kind: pa.DataType, where: str) -> None:
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


def _embeddings(
    column: pa.Array, where: str, start: int, width: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """One batch of the ``embedding`` column (its first row is file row ``start``) as an
    (R, D) array of its R non-null rows, the batch's mask of those rows, and the width
    (D and the file row that set it: the first non-null row of the file)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    has = ~pc.is_null(col).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    if not has.any():
        return np.zeros((0, width[0] if width else 0), np.float32), has, width
    if width is None:
        first = int(np.flatnonzero(has)[0])
        width = (int(lengths[first]), start + first)
        if width[0] == 0:
            raise FeatureFileError(f"{where}: embeddings of width 0")
    dim = width[0]
    bad = np.flatnonzero(has & (lengths != dim))
    if len(bad):
        raise FeatureFileError(
            f"{where} row {start + bad[0] + 1}: an embedding of {lengths[bad[0]]} values, "
            f"expected {dim} (the width of row {width[1] + 1})"
        )
    flat = col.flatten()
    if flat.null_count:
        owner = np.repeat(np.arange(len(lengths)), lengths)
        row = owner[np.flatnonzero(pc.is_null(flat).to_numpy(zero_copy_only=False))[0]]
        raise FeatureFileError(f"{where} row {start + row + 1}: a null value inside the embedding")
    values = flat.to_numpy(zero_copy_only=False).reshape(-1, dim)
    nan = ~np.isfinite(values).all(axis=1)
    if nan.any():
        row = int(np.flatnonzero(has)[np.flatnonzero(nan)[0]])
        raise FeatureFileError(f"{where} row {start + row + 1}: NaN or infinity in the embedding")
    return values, has, width


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
        pq.write_table(table, tmp, row_group_size=BATCH_ROWS)
