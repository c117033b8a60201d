"""Features the user brings: a Parquet file of ``id`` → ``embedding`` (CLIP, DINOv2, …),
or a features folder of such files written by ``noisyclean features`` (on Ray).

``score --features FILE`` reads it in place of a backbone. The file has an ``id``
column (joined to the manifest's ids; a manifest without ids has row numbers) and an
``embedding`` column, a list or fixed-size list of float16 or float32; a ``status``
column (``ok``, ``missing``, ``unreadable``) is optional. A manifest row the file lacks,
or whose embedding is null, gets status ``missing`` (or the file's own status).

A **features folder** (a local folder or an object-store prefix such as
``s3://bucket/feats``) holds Parquet shards of that same format and, written last, the
list of its shards ``_SHARDS.json`` (``SHARDS_FILE``): their names relative to the
folder and row counts, the backbone, image size and manifest they came from. Only the
listed shards are read, in the listed order, as one table; a folder without the list
(a run cut short, or not a features folder) is refused. Locations with a scheme
(``s3://``, ``gs://``, ``file://``, …) go through pyarrow's filesystems, or through
fsspec for the schemes pyarrow lacks.

The file is read column-wise with pyarrow, without a Python object per value, and
conf.parquet records its location and stamp (a file's size and modification time; a
folder's digest of its list file), so ``train`` reads the same features again and
refuses them if they changed since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from noisyclean.errors import NoisyCleanError
from noisyclean.features import Features
from noisyclean.manifest import STATUSES, Manifest
from noisyclean.sources import is_url

#: Called with (rows done, rows) once the file is read and checked.
Progress = Callable[[int, int], None]

#: What conf.parquet and the run record as the backbone of a run on a features file.
BACKBONE = "features"

_FLOATS = (pa.float16(), pa.float32())

#: The list of a features folder's shards, written after every shard.
SHARDS_FILE = "_SHARDS.json"
#: The version of ``SHARDS_FILE``'s content (and of the shards' columns).
SHARDS_FORMAT_VERSION = 1


class FeatureFileError(NoisyCleanError):
    """A features file that can't be used."""


def stamp_of(path: Path) -> str:
    """The file's size and modification time: a different stamp means another file."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or a URI, and the path within it.

    A local path is made absolute. A URI goes to pyarrow's own filesystems (local, S3,
    GCS, HDFS, Azure), else to fsspec (``memory://``, ``abfs://`` with adlfs, …).

    Raises:
        FeatureFileError: a scheme neither knows, or a store that can't be reached.
    """
    if not is_url(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    text = str(location).rstrip("/")
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # a scheme pyarrow has no filesystem for (or wasn't built with)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise FeatureFileError(f"{text}: cannot open ({_first_line(err)})") from None
    try:
        import fsspec
    except ImportError:
        raise FeatureFileError(
            f"{text}: pyarrow has no filesystem for this scheme; pip install fsspec and "
            "the scheme's package (e.g. adlfs)"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError, OSError) as err:
        raise FeatureFileError(f"{text}: cannot open ({_first_line(err)})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), str(path)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _join(folder: str, name: str) -> str:
    return str(PurePosixPath(folder) / name) if folder else name


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return bytes(fh.read())


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_shard_list(fs: pafs.FileSystem, folder: str, listing: Mapping[str, Any]) -> str:
    """Write a features folder's ``SHARDS_FILE`` (its shards must all be written), and
    return the folder's stamp.

    On a local disk the file is written beside and renamed into place; an object store
    publishes an object whole when its upload completes. Either way a reader sees the
    old list (or none) until the new one is complete.
    """
    from noisyclean.artifacts import atomic_path

    data = (json.dumps(dict(listing), indent=1) + "\n").encode()
    target = _join(folder, SHARDS_FILE)
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_path(Path(target)) as tmp:
            tmp.write_bytes(data)
    else:
        try:
            with fs.open_output_stream(target) as fh:
                fh.write(data)
        except (pa.ArrowException, OSError) as err:
            raise FeatureFileError(f"{target}: cannot write ({_first_line(err)})") from None
    return _digest(data)


def read_shard_list(fs: pafs.FileSystem, folder: str, where: str) -> tuple[dict[str, Any], str]:
    """A features folder's list of shards, checked, and the folder's stamp.

    Raises:
        FeatureFileError: one line: not JSON, another format version, a bad entry.
    """
    data = _read_bytes(fs, _join(folder, SHARDS_FILE))
    try:
        listing = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FeatureFileError(f"{where}/{SHARDS_FILE}: not JSON ({err})") from None
    if not isinstance(listing, dict):
        raise FeatureFileError(f"{where}/{SHARDS_FILE}: not a JSON object")
    version = listing.get("format_version", 0)
    if version != SHARDS_FORMAT_VERSION:
        raise FeatureFileError(
            f"{where}/{SHARDS_FILE}: format_version {version}, this noisyclean reads "
            f"{SHARDS_FORMAT_VERSION}; "
            + (
                "upgrade noisyclean"
                if isinstance(version, int) and version > SHARDS_FORMAT_VERSION
                else "rerun `noisyclean features`"
            )
        )
    shards = listing.get("shards")
    if not isinstance(shards, list) or not shards:
        raise FeatureFileError(f"{where}/{SHARDS_FILE}: 'shards' is not a list of shards")
    for i, entry in enumerate(shards):
        name = entry.get("file") if isinstance(entry, dict) else None
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or not name
            or name.startswith("/")
            or ".." in PurePosixPath(name).parts
            or not isinstance(rows, int)
            or rows < 0
        ):
            raise FeatureFileError(
                f"{where}/{SHARDS_FILE}: shard {i + 1} is not a relative file name with rows"
            )
    return listing, _digest(data)


@dataclass(frozen=True)
class FeatureFile:
    """A user's features file, or a features folder, to be joined to a manifest by id.

    Attributes:
        path: the Parquet file or the features folder: an absolute local path, or a URI
            (``s3://bucket/prefix``) as given.
        stamp: when it was read (or recorded): a file's size and modification time, a
            folder's digest of its list of shards.
        shards: a folder's shards (paths within its filesystem, in listed order) and
            their listed row counts; empty for a single file.
    """

    path: str
    stamp: str
    shards: tuple[tuple[str, int], ...] = ()

    backbone = BACKBONE

    @classmethod
    def open(cls, path: str | Path) -> FeatureFile:
        """The features file or folder at ``path``, its stamp taken now.

        Raises:
            FeatureFileError: nothing there, or a folder without its list of shards.
        """
        fs, where = filesystem(path)
        location = where if not is_url(path) else str(path).rstrip("/")
        kind = _kind(fs, where, location)
        if kind == "missing":
            raise FeatureFileError(f"{location}: no such features file or folder")
        if kind == "file":
            return cls(path=location, stamp=_file_stamp(fs, where))
        if kind == "folder":
            raise FeatureFileError(
                f"{location}: incomplete or not a features folder (no {SHARDS_FILE}; "
                "was `noisyclean features` cut short?)"
            )
        listing, stamp = read_shard_list(fs, where, location)
        shards = tuple((_join(where, e["file"]), int(e["rows"])) for e in listing["shards"])
        return cls(path=location, stamp=stamp, shards=shards)

    @classmethod
    def recorded(cls, path: str | Path, stamp: str) -> FeatureFile:
        """The features file or folder a conf.parquet names, refused if it changed since."""
        try:
            found = cls.open(path)
        except FeatureFileError as err:
            if "no such features file" in str(err):
                raise FeatureFileError(f"{path}: the features file `score` read is gone") from None
            raise
        if stamp and found.stamp != stamp:
            raise FeatureFileError(
                f"{path}: the features {'folder' if found.shards else 'file'} changed since "
                "`noisyclean score` read it; rerun score"
            )
        return found

    @property
    def name(self) -> str:
        """The file's or folder's last path component, as errors name it."""
        return PurePosixPath(self.path.rstrip("/")).name or self.path

    def load(self, manifest: Manifest, *, progress: Progress | None = None) -> Features:
        """One feature vector per manifest row, in manifest order.

        The ids are read first; the embeddings then stream in batches of
        ``BATCH_ROWS`` straight into the (N, D) float32 output, so the file's own
        values are never all in memory beside it. A folder's shards are read one after
        the other, as one table.

        Raises:
            FeatureFileError: one line naming the file (a folder's shard) and the row or
                column: not Parquet, no ``id``/``embedding`` column, an embedding of
                another type or width, a NaN, a duplicate id, an unknown status, a shard
                missing or of another length than listed.
        """
        parts = self._parts()
        ids_parts: list[pa.Array] = []
        status_parts: list[pa.Array] = []
        has_status = False
        for where, pf in parts:
            names = pf.schema_arrow.names
            _check_type(pf.schema_arrow.field("embedding").type, where)
            head = pf.read(columns=["id"] + (["status"] if "status" in names else []))
            ids_parts.append(head.column("id").cast(pa.string()).combine_chunks())
            if "status" in names:
                has_status = True
                status_parts.append(head.column("status").cast(pa.string()).combine_chunks())
            else:
                status_parts.append(pa.nulls(head.num_rows, pa.string()))
        offsets = np.cumsum([0] + [len(a) for a in ids_parts])

        def at_row(row: int) -> str:  # a row of the whole table, as "<file> row <n>"
            part = int(np.searchsorted(offsets, row, side="right") - 1)
            return f"{parts[part][0]} row {row - offsets[part] + 1}"

        ids = pa.concat_arrays(ids_parts)
        if ids.null_count:
            row = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
            raise FeatureFileError(f"{at_row(row)}: empty id")
        file_ids = pd.Index(ids.to_pandas())
        if not file_ids.is_unique:
            row = int(np.flatnonzero(file_ids.duplicated())[0])
            raise FeatureFileError(f"{at_row(row)}: duplicate id '{file_ids[row]}'")
        given: np.ndarray | None = None
        if has_status:
            given = pa.concat_arrays(status_parts).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~pd.isna(given) & ~np.isin(given, STATUSES))
            if len(bad):
                raise FeatureFileError(
                    f"{at_row(int(bad[0]))}: status '{given[bad[0]]}', expected one of "
                    f"{', '.join(STATUSES)}"
                )
        del ids_parts, status_parts, ids

        at = file_ids.get_indexer(manifest.frame["id"].to_numpy(dtype=object))
        target = np.full(len(file_ids), -1, dtype=np.int64)  # file row -> manifest row
        target[at[at >= 0]] = np.flatnonzero(at >= 0)
        has = np.zeros(len(file_ids), dtype=bool)
        out: np.ndarray | None = None
        width: Width | None = None  # (dim, the file and row that set it)
        start = 0  # the batch's first row in the whole table
        for where, local, column in _batches(parts):
            values, present, width = _embeddings(column, where, local, width)
            stop = start + len(column)
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
            raise FeatureFileError(f"{self.name}: column 'embedding' has no values")

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

    def _parts(self) -> list[tuple[str, pq.ParquetFile]]:
        """The Parquet files to read, in order, each with the name errors give it."""
        fs, where = filesystem(self.path)
        if not self.shards:
            return [(self.name, _open_parquet(fs, where, self.name, self.path))]
        parts = []
        for shard, rows in self.shards:
            name = f"{self.name}/{PurePosixPath(shard).relative_to(where)}"
            if fs.get_file_info(shard).type != pafs.FileType.File:
                raise FeatureFileError(
                    f"{name}: listed in {SHARDS_FILE} but missing; rerun `noisyclean features`"
                )
            pf = _open_parquet(fs, shard, name, name)
            if pf.metadata.num_rows != rows:
                raise FeatureFileError(
                    f"{name}: {pf.metadata.num_rows} rows, {SHARDS_FILE} lists {rows}; "
                    "rerun `noisyclean features`"
                )
            parts.append((name, pf))
        return parts


def _kind(fs: pafs.FileSystem, path: str, location: str) -> str:
    """``file``, ``features folder``, ``folder`` (without a list) or ``missing``."""
    try:
        if fs.get_file_info(_join(path, SHARDS_FILE)).type == pafs.FileType.File:
            return "features folder"
        kind = fs.get_file_info(path).type
    except (pa.ArrowException, OSError) as err:
        raise FeatureFileError(f"{location}: cannot read ({_first_line(err)})") from None
    if kind == pafs.FileType.File:
        return "file"
    if kind == pafs.FileType.Directory:
        return "folder"
    return "missing"


def _file_stamp(fs: pafs.FileSystem, path: str) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return stamp_of(Path(path))  # as earlier versions recorded it
    info = fs.get_file_info(path)
    return f"{info.size}:{info.mtime_ns or ''}"


def _open_parquet(fs: pafs.FileSystem, path: str, name: str, location: str) -> pq.ParquetFile:
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            pf = pq.ParquetFile(path)
        else:
            pf = pq.ParquetFile(fs.open_input_file(path))
    except (pa.ArrowException, OSError) as err:
        raise FeatureFileError(f"{location}: not a Parquet file ({_first_line(err)})") from None
    names = pf.schema_arrow.names
    for col in ("id", "embedding"):
        if col not in names:
            raise FeatureFileError(
                f"{location}: no '{col}' column (columns found: {', '.join(names)})"
            )
    return pf


def _batches(parts: list[tuple[str, pq.ParquetFile]]) -> Iterator[tuple[str, int, pa.Array]]:
    """The ``embedding`` column of every part, ``BATCH_ROWS`` rows at a time: (the part's
    name, the batch's first row in that part, the batch)."""
    for where, pf in parts:
        local = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["embedding"]):
            yield where, local, batch.column(0)
            local += batch.num_rows


#: The embeddings' width, and the file and row (from 1) of the first embedding, that set it.
Width = tuple[int, str, int]

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
    column: pa.Array, where: str, start: int, width: Width | None
) -> tuple[np.ndarray, np.ndarray, Width | None]:
    """One batch of the ``embedding`` column (its first row is row ``start`` of the file
    ``where``) as an (R, D) array of its R non-null rows, the batch's mask of those rows,
    and the width (D and the row that set it, the first non-null row of the table, as
    errors name it)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    has = ~pc.is_null(col).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    if not has.any():
        return np.zeros((0, width[0] if width else 0), np.float32), has, width
    if width is None:
        first = int(np.flatnonzero(has)[0])
        width = (int(lengths[first]), where, start + first + 1)
        if width[0] == 0:
            raise FeatureFileError(f"{where}: embeddings of width 0")
    dim = width[0]
    bad = np.flatnonzero(has & (lengths != dim))
    if len(bad):
        raise FeatureFileError(
            f"{where} row {start + bad[0] + 1}: an embedding of {lengths[bad[0]]} values, "
            f"expected {dim} (the width of {'' if width[1] == where else width[1] + ' '}"
            f"row {width[2]})"
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
