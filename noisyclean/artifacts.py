"""Every noisyclean file format: one reader and one writer per artifact, atomic writes.

The artifacts and their owners here:

- ``conf.parquet`` (``score``'s output, ``train``'s input): ``write_conf`` / ``read_conf``;
- the run directory (``train``'s output, read by ``review`` and ``embed``):
  ``write_run`` / ``read_run_config``, ``read_suspects``, ``read_model``;
- an embeddings file (``embed``'s output): ``write_embeddings``.

Each carries a ``format_version``; a reader refuses any other version in one line that
names both. A reader checks everything it reads and turns every problem into one
``ArtifactError`` line naming the file and the field. Parquet key-value metadata holds
strings: a ``str`` value is stored as is, every other value as JSON, and each reader
decodes the keys it knows with the type it expects.

This module imports no torch: the CLI and the review page read runs without it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from noisyclean import __version__
from noisyclean.errors import NoisyCleanError

#: The format of each artifact; bump it with every change a reader must know about.
CONF_FORMAT = 3
RUN_FORMAT = 3
EMBEDDINGS_FORMAT = 1

STATUSES = ("ok", "missing", "unreadable")
PARQUET_SUFFIXES = (".parquet", ".pq")


class ArtifactError(NoisyCleanError):
    """An input file that is not the noisyclean output it should be."""


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask),
    not ``mkstemp``'s 0600. An ``OSError`` becomes one line naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise NoisyCleanError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        raise NoisyCleanError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(
    output: Path,
    *,
    inputs: Sequence[Path] = (),
    runs: Sequence[Path] = (),
    suffixes: Sequence[str] | None = None,
    folder: bool = False,
) -> None:
    """Refuse, before any work, an output that would destroy an input or can't be written.

    Args:
        output: the file (or, with ``folder``, the folder) to write.
        inputs: files the command reads; the output may not be one of them.
        runs: run directories the command reads; the output may not lie inside one.
        suffixes: the file name must end in one of these.
        folder: the output is a folder of files.

    Raises:
        NoisyCleanError: one line naming the output and why.
    """
    output = Path(output)
    for source in inputs:
        source = Path(source)
        if _same_path(output, source):
            raise NoisyCleanError(
                f"{output}: would overwrite the input {source}; choose another output"
            )
    for run in runs:
        if output.resolve().is_relative_to(Path(run).resolve()):
            raise NoisyCleanError(
                f"{output}: is inside the run directory {run} that this command reads; "
                "choose an output outside it"
            )
    if folder:
        if output.exists() and not output.is_dir():
            raise NoisyCleanError(f"{output}: is a file; give a folder for the run")
        probe_dir = output
    else:
        if output.is_dir():
            raise NoisyCleanError(f"{output}: is a folder; give a file name")
        if suffixes and output.suffix.lower() not in suffixes:
            raise NoisyCleanError(
                f"{output}: the output is written as {suffixes[0].lstrip('.')}; "
                f"give a name ending in {' or '.join(suffixes)}"
            )
        probe_dir = output.parent
    check_writable_dir(probe_dir, what="output folder")


def check_writable_dir(folder: Path, *, what: str, create: bool = False) -> None:
    """Check that a file can be made in ``folder`` (one line if not).

    With ``create`` the folder is made first; without, the nearest existing folder on
    its path is probed, so a check that fails leaves nothing behind.
    """
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe_in = folder
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise NotADirectoryError(20, f"{probe_in} is not a folder")
        fd, probe = tempfile.mkstemp(prefix=".noisyclean-probe.", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NoisyCleanError(
            f"{folder}: cannot write to this {what} ({err.strerror or err})"
        ) from None


# --------------------------------------------------------------------------- Parquet


def list_array(values: pa.Array, lengths: np.ndarray, valid: np.ndarray) -> pa.ListArray:
    """A list column from its flat ``values``: row i holds the next ``lengths[i]`` values,
    or is null where not ``valid``. Built from buffers: no Python object per value."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.where(valid, lengths, 0), out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))
    return lists.cast(pa.list_(values.type))


def list_column(values: np.ndarray, usable: np.ndarray) -> pa.ListArray:
    """(N, D) rows as a list<float32> column: the usable rows' values, null for the rest."""
    values = np.asarray(values, dtype=np.float32)
    usable = np.asarray(usable, dtype=bool)
    flat = pa.array(np.ascontiguousarray(values[usable]).reshape(-1), type=pa.float32())
    return list_array(flat, np.full(len(values), values.shape[1]), usable)


def _fixed_rows(
    column: pa.ChunkedArray | pa.Array, width: int, rows: np.ndarray, what: str
) -> tuple[pa.Array, np.ndarray]:
    """A list column's child values and each row's start in them, checked to hold
    ``width`` entries on every row of ``rows`` (a ``ValueError`` naming the row if not)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(col, pa.LargeListArray):
        col = col.cast(pa.list_(col.type.value_type))
    lengths = pc.list_value_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(rows & (lengths != width))
    if len(bad):
        i = int(bad[0])
        got = "null" if lengths[i] < 0 else f"{lengths[i]} {what}"
        raise ValueError(f"row {i + 1}: {got}, expected {width}")
    return col.values, col.offsets.to_numpy()[:-1]


def dense_column(column: pa.ChunkedArray | pa.Array, width: int, rows: np.ndarray) -> np.ndarray:
    """A list<float> column back as an (N, width) float32 array: ``rows`` read, zeros elsewhere.

    Raises:
        ValueError: a ``rows`` entry is null, of another length, or holds a null or NaN.
    """
    flat, offsets = _fixed_rows(column, width, rows, "values")
    if flat.null_count:
        starts_null = np.flatnonzero(pc.is_null(flat).to_numpy(zero_copy_only=False))
        owner = np.searchsorted(offsets, starts_null, side="right") - 1
        hit = owner[rows[owner]]
        if len(hit):
            raise ValueError(f"row {int(hit[0]) + 1}: a null value")
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    out = np.zeros((len(rows), width), dtype=np.float32)
    take = np.flatnonzero(rows)
    if len(take):
        out[take] = values[offsets[take, None] + np.arange(width)[None, :]]
    nan = np.flatnonzero(np.isnan(out).any(axis=1))
    if len(nan):
        raise ValueError(f"row {int(nan[0]) + 1}: a NaN value")
    return out


def _encode(meta: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {
        key.encode(): (value if isinstance(value, str) else json.dumps(value)).encode()
        for key, value in {"noisyclean_version": __version__, **meta}.items()
    }


def _write_parquet(
    path: Path,
    frame: pd.DataFrame,
    *,
    schema: pa.Schema,
    metadata: Mapping[str, Any],
    lists: Mapping[str, pa.Array] | None = None,
) -> None:
    """Write ``frame`` (plus the prebuilt ``lists`` columns) with ``schema``'s columns first,
    extra columns of ``frame`` after, atomically."""
    lists = dict(lists or {})
    base = pa.Table.from_pandas(
        frame[[c for c in frame.columns if c not in lists]], preserve_index=False
    )
    for name, column in lists.items():
        base = base.append_column(name, column)
    _write_table(path, base, schema=schema, metadata=metadata)


def _write_table(
    path: Path, table: pa.Table, *, schema: pa.Schema, metadata: Mapping[str, Any]
) -> None:
    """Write ``table`` with ``schema``'s columns first, cast to its types, then the
    table's other columns, and ``metadata``, atomically."""
    extra = [c for c in table.column_names if c not in schema.names]
    columns = [table.column(f.name).cast(f.type) for f in schema]
    columns += [table.column(c) for c in extra]
    out = pa.Table.from_arrays(columns, names=[*schema.names, *extra])
    with atomic_path(path) as tmp:
        pq.write_table(out.replace_schema_metadata(_encode(metadata)), tmp)


class _Meta:
    """Decodes one file's key-value metadata field by field, each error naming the field."""

    def __init__(self, path: Path, raw: Mapping[bytes, bytes] | None, what: str):
        self.path, self.what = path, what
        self.raw = {
            k.decode(errors="replace"): v.decode(errors="replace") for k, v in (raw or {}).items()
        }

    def fail(self, key: str, why: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: metadata '{key}' {why}")

    def version(self, expected: int) -> None:
        _check_version(
            self.path,
            self.what,
            self.raw.get("format_version"),
            self.raw.get("noisyclean_version"),
            expected,
        )

    def text(self, key: str, *, optional: bool = False) -> str:
        if key not in self.raw:
            if optional:
                return ""
            raise self.fail(key, f"missing; was it written by noisyclean ({self.what})?")
        return self.raw[key]

    def json(self, key: str) -> Any:
        text = self.text(key)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise self.fail(key, f"is not valid JSON ({text[:40]!r})") from None

    def positive_int(self, key: str) -> int:
        return _positive_int(self.json(key), lambda why: self.fail(key, why))

    def number(self, key: str) -> float:
        value = self.json(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(key, f"is {value!r}, not a number")
        return float(value)

    def classes(self, key: str = "classes") -> list[str]:
        return _classes(self.json(key), lambda why: self.fail(key, why))


def _check_version(
    path: Path, what: str, text: str | None, written: str | None, expected: int
) -> None:
    """Refuse a file of another format, naming both versions; no version means format 0."""
    try:
        found = int(text) if text is not None else 0
    except ValueError:
        raise ArtifactError(f"{path}: format_version is {text!r}, not a number") from None
    if found != expected:
        newer = found > expected
        raise ArtifactError(
            f"{path}: {what} format {found} (written by noisyclean {written or 'before 0.2'}), "
            f"but this noisyclean reads format {expected}; "
            + ("upgrade noisyclean" if newer else "rerun the command that wrote it")
        )


def _positive_int(value: Any, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(f"is {value!r}, not a positive integer")
    return int(value)


def _image_size(value: Any, features_file: Any, fail: Any) -> int:
    """A backbone's input side; 0 where the run read a features file instead."""
    if features_file and value == 0:
        return 0
    return _positive_int(value, fail("image_size"))


def _classes(value: Any, fail: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise fail("is not a JSON list of class names")
    if len(set(value)) != len(value):
        raise fail("names a class twice")
    if len(value) < 2:
        raise fail(f"lists {len(value)} class(es); at least 2 are needed")
    return list(value)


def _read_table(path: Path, what: str, required: Sequence[str]) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file ({what})")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArtifactError(f"{path}: not a Parquet file ({first})") from None
    missing = [n for n in required if n not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)} ({what})")
    return table


def _status(frame: pd.DataFrame, path: Path) -> np.ndarray:
    status = frame["status"].to_numpy(dtype=object)
    bad = np.flatnonzero(~np.isin(status, STATUSES))
    if len(bad):
        raise ArtifactError(
            f"{path}: row {bad[0] + 1}: status is {status[bad[0]]!r}, expected one of "
            f"{', '.join(STATUSES)}"
        )
    return status.astype(str)


# --------------------------------------------------------------------------- conf.parquet

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
        ("top_labels", pa.list_(pa.string())),
        ("top_confidences", pa.list_(pa.float32())),
        ("fold", pa.int32()),
        ("neighbours", pa.list_(pa.string())),
        ("neighbour_similarities", pa.list_(pa.float32())),
    ]
)
#: conf.parquet's list columns, built from arrays rather than from the frame.
_CONF_LISTS = ("top_labels", "top_confidences", "neighbours", "neighbour_similarities")


@dataclass(frozen=True)
class ConfMeta:
    """conf.parquet's metadata: what ``train`` needs to find the same features again.

    Attributes:
        classes: the K class names.
        backbone: the feature backbone's name (``features:<file>`` for a features file).
        image_size: the input side the backbone ran at (0 for a features file).
        cache_dir: the feature cache ``score`` used.
        manifest: the manifest file.
        manifest_dir: the folder relative paths resolve against.
        folds, seed, blend, k, epochs: the confidence module's options.
        top_classes: T, the classes kept per row (K when K ≤ ``--top-classes``).
        features_file: the features file ``score --features`` read, else "".
        features_stamp: its size and modification time, to notice a change.
        neighbours: how the k-NN vote's search ran (method, nlist, nprobe, recall).
    """

    classes: list[str]
    backbone: str
    image_size: int
    cache_dir: str
    manifest: str
    manifest_dir: str
    folds: int
    seed: int
    blend: float
    k: int
    epochs: int
    top_classes: int
    features_file: str = ""
    features_stamp: str = ""
    neighbours: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conf:
    """conf.parquet in memory.

    Attributes:
        frame: one row per manifest row, in manifest order: every column but the two
            top lists (``true_label`` and others included when present).
        top_classes: (N, T) int32 class indices of each ``ok`` row's best classes, best
            first; zeros for other rows.
        top_scores: (N, T) float32 their confidences; zeros for other rows.
        meta: the metadata.
        neighbours: (N, k) int64, each ``ok`` row's k nearest train rows in the feature
            space (row positions, nearest first, never the row itself): the k-NN vote's
            voters; -1 pads, and fills other rows.
        similarities: (N, k) float32, their cosine similarities; NaN where -1.
    """

    frame: pd.DataFrame
    top_classes: np.ndarray
    top_scores: np.ndarray
    meta: ConfMeta
    neighbours: np.ndarray
    similarities: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return (self.frame["status"] == "ok").to_numpy()


def write_conf(path: Path, conf: Conf) -> None:
    """Write conf.parquet atomically."""
    ok = conf.ok
    n, width = conf.top_classes.shape
    names = pa.array(conf.meta.classes, type=pa.string())
    codes = pa.array(np.ascontiguousarray(conf.top_classes[ok]).reshape(-1).astype(np.int32))
    labels = pa.DictionaryArray.from_arrays(codes, names).cast(pa.string())
    top_labels = list_array(labels, np.full(n, width), ok)
    ids = pa.array(conf.frame["id"].to_numpy(dtype=object), type=pa.string())
    near = (conf.neighbours >= 0) & ok[:, None]
    similarities = pa.array(conf.similarities[near].astype(np.float32), type=pa.float32())
    _write_parquet(
        path,
        conf.frame,
        schema=CONF_SCHEMA,
        metadata={**asdict(conf.meta), "format_version": CONF_FORMAT},
        lists={
            "top_labels": top_labels,
            "top_confidences": list_column(conf.top_scores, ok),
            "neighbours": id_lists(ids, conf.neighbours, ok),
            "neighbour_similarities": list_array(similarities, near.sum(axis=1), ok),
        },
    )


def read_conf(path: Path) -> Conf:
    """Read and check conf.parquet: its format version, metadata, columns and top lists.

    A file whose top lists contradict its own ``confidence`` or ``pred_label`` columns
    is refused, and so is a top label that is not among the metadata's classes.
    """
    path = Path(path)
    table = _read_table(path, "conf.parquet from `noisyclean score`", CONF_SCHEMA.names)
    meta = _Meta(path, table.schema.metadata, "conf.parquet")
    meta.version(CONF_FORMAT)
    classes = meta.classes()
    neighbours = meta.json("neighbours") if "neighbours" in meta.raw else {}
    info = ConfMeta(
        classes=classes,
        backbone=meta.text("backbone"),
        image_size=int(meta.number("image_size")),
        cache_dir=meta.text("cache_dir", optional=True),
        manifest=meta.text("manifest"),
        manifest_dir=meta.text("manifest_dir"),
        folds=meta.positive_int("folds"),
        seed=int(meta.number("seed")),
        blend=meta.number("blend"),
        k=meta.positive_int("k"),
        epochs=meta.positive_int("epochs"),
        top_classes=meta.positive_int("top_classes"),
        features_file=meta.text("features_file", optional=True),
        features_stamp=meta.text("features_stamp", optional=True),
        neighbours=neighbours if isinstance(neighbours, dict) else {},
    )
    if not info.backbone:
        raise meta.fail("backbone", "is empty")
    if info.image_size < 0 or (info.image_size == 0 and not info.features_file):
        raise meta.fail("image_size", f"is {info.image_size}, not a positive integer")
    width = info.top_classes
    if width > len(classes):
        raise meta.fail("top_classes", f"is {width}, more than the {len(classes)} classes")
    frame = table.drop_columns(list(_CONF_LISTS)).to_pandas()
    status = _status(frame, path)
    ok = status == "ok"
    try:
        scores = dense_column(table.column("top_confidences"), width, ok)
    except ValueError as err:
        raise ArtifactError(f"{path}: column 'top_confidences', {err}") from None
    top = _label_codes(table.column("top_labels"), classes, width, ok, path)
    labels = pd.Categorical(frame["label"], categories=classes).codes
    unknown = np.flatnonzero(labels < 0)
    if len(unknown):
        i = int(unknown[0])
        raise ArtifactError(
            f"{path}: row {i + 1}: label {frame['label'].iloc[i]!r} is not among the "
            "metadata's classes"
        )
    unused = np.flatnonzero(np.bincount(labels, minlength=len(classes)) == 0)
    if len(unused):
        raise meta.fail("classes", f"lists {classes[unused[0]]!r}, the label of no row")
    _check_consistent(path, frame, top, scores, labels, ok, classes)
    ids = table.column("id").combine_chunks()
    near = _id_rows(table.column("neighbours"), ids, info.k, path)
    found = near >= 0
    try:
        sims = _ragged_floats(table.column("neighbour_similarities"), found.sum(axis=1))
    except ValueError as err:
        raise ArtifactError(f"{path}: column 'neighbour_similarities', {err}") from None
    similarities = np.full(near.shape, np.nan, dtype=np.float32)
    similarities[found] = sims
    return Conf(
        frame=frame,
        top_classes=top,
        top_scores=scores,
        meta=info,
        neighbours=near,
        similarities=similarities,
    )


def id_lists(ids: pa.Array, rows: np.ndarray, valid: np.ndarray) -> pa.ListArray:
    """(N, L) row positions (-1 pads) as a list<string> column of the rows' ids; null
    where not ``valid``. Built with pyarrow's ``take``: no Python object per value."""
    keep = (rows >= 0) & valid[:, None]
    values = ids.take(pa.array(rows[keep].astype(np.int64)))
    return list_array(values, keep.sum(axis=1), valid)


def _list_parts(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """A list column's values (only those its rows hold) and each row's length (0 for
    null)."""
    col = column.combine_chunks()
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    return pc.list_flatten(col), lengths.astype(np.int64)


def _ragged(values: np.ndarray, lengths: np.ndarray, width: int, fill: Any) -> np.ndarray:
    """Flat ``values``, ``lengths[i]`` per row, as an (N, width) array padded with ``fill``."""
    out = np.full((len(lengths), width), fill, dtype=values.dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    out[rows, np.arange(len(values)) - np.repeat(starts, lengths)] = values
    return out


def _id_rows(column: pa.ChunkedArray, ids: pa.Array, k: int, path: Path) -> np.ndarray:
    """A list<string> column of row ids as (N, k) int64 row positions, -1 padded."""
    values, lengths = _list_parts(column)
    long = np.flatnonzero(lengths > k)
    if len(long):
        i = int(long[0])
        raise ArtifactError(
            f"{path}: column 'neighbours', row {i + 1}: {lengths[i]} ids, more than k = {k}"
        )
    where = pc.index_in(values, value_set=ids)
    if where.null_count:
        at = int(np.flatnonzero(pc.is_null(where).to_numpy(zero_copy_only=False))[0])
        i = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        raise ArtifactError(
            f"{path}: column 'neighbours', row {i + 1}: {str(values[at])!r} is the id of no row"
        )
    positions = where.to_numpy(zero_copy_only=False).astype(np.int64)
    return _ragged(positions, lengths, k, -1)


def _ragged_floats(column: pa.ChunkedArray, expected: np.ndarray) -> np.ndarray:
    """A list<float> column's values, checked to hold ``expected[i]`` finite values on
    row i (a ``ValueError`` naming the row if not)."""
    values, lengths = _list_parts(column)
    bad = np.flatnonzero(lengths != expected)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"row {i + 1}: {lengths[i]} values, expected {expected[i]}")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32)
    wrong = np.flatnonzero(~np.isfinite(flat))
    if len(wrong):
        i = int(np.searchsorted(np.cumsum(lengths), wrong[0], side="right"))
        raise ValueError(f"row {i + 1}: a null or NaN value")
    return flat


def _label_codes(
    column: pa.ChunkedArray, classes: list[str], width: int, rows: np.ndarray, path: Path
) -> np.ndarray:
    """list<string> class names as an (N, width) int32 array of indices into ``classes``."""
    try:
        names, offsets = _fixed_rows(column, width, rows, "labels")
    except ValueError as err:
        raise ArtifactError(f"{path}: column 'top_labels', {err}") from None
    codes = pc.index_in(names, value_set=pa.array(classes, type=pa.string()))
    flat = codes.to_numpy(zero_copy_only=False)
    out = np.zeros((len(rows), width), dtype=np.int32)
    take = np.flatnonzero(rows)
    if len(take):
        picked = flat[offsets[take, None] + np.arange(width)[None, :]]
        missing = np.isnan(picked) if picked.dtype.kind == "f" else picked < 0
        if missing.any():
            i = int(take[np.flatnonzero(missing.any(axis=1))[0]])
            raise ArtifactError(
                f"{path}: column 'top_labels', row {i + 1}: a label that is not among the "
                "metadata's classes"
            )
        out[take] = picked.astype(np.int32)
    return out


def _check_consistent(
    path: Path,
    frame: pd.DataFrame,
    top: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    ok: np.ndarray,
    classes: list[str],
) -> None:
    """The top lists agree with ``pred_label``/``pred_confidence`` and ``confidence``."""
    rows = np.flatnonzero(ok)
    names = np.asarray(classes, dtype=object)
    pred = frame["pred_label"].to_numpy(dtype=object)[rows]
    bad = rows[(pred != names[top[rows, 0]])]
    given = frame["confidence"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    hit = top[rows] == labels[rows, None]
    in_top = hit.any(axis=1)
    at = scores[rows][np.arange(len(rows)), hit.argmax(axis=1)]
    bad = np.union1d(bad, rows[in_top & ~(np.abs(at - given) <= 1e-6)])
    bad = np.union1d(bad, rows[~in_top & ~(given <= scores[rows, -1] + 1e-6)])
    if len(bad):
        raise ArtifactError(
            f"{path}: row {int(bad[0]) + 1}: the top lists disagree with the 'confidence' or "
            "'pred_label' column"
        )


# --------------------------------------------------------------------------- the run directory

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
        ("outlier", pa.float32()),
        ("is_outlier", pa.bool_()),
        ("suggestion", pa.string()),
        ("duplicate_group", pa.int64()),
        ("conflict", pa.bool_()),
    ]
)

#: What ``suggestion`` says: drop an outlier (no label fits it), relabel a suspect.
SUGGESTIONS = ("drop", "relabel")

RUN_FILES = (
    "config.json",
    "model.safetensors",
    "embeddings.parquet",
    "suspects.parquet",
    "duplicates.parquet",
)


@dataclass(frozen=True)
class RunConfig:
    """A run directory's ``config.json``.

    Attributes:
        run_id: the run's fresh id (the review page keys its decisions by it).
        classes: K class names.
        backbone: the feature backbone's name.
        image_size: the input side the backbone ran at.
        manifest: the manifest file.
        manifest_dir: the folder relative paths resolve against.
        conf: the conf.parquet the run was trained from.
        cache_dir: the feature cache.
        feature_dim: D, the backbone features' width.
        embedding_dim: E, the embedding's width.
        train: every Phase 2 option.
        suspects: every suspect-finder option.
        epoch_losses: the mean loss of each epoch.
        features_file: the features file the run was trained on, else "" (a backbone).
        neighbours: how the learned-space k-NN search ran (method, nlist, nprobe, recall).
        duplicates: the near-duplicate options and counts (threshold, groups by kind).
        outliers: the outlier score's options (parts, threshold) and the number flagged.
        noise: the flag rule's figures over the usable rows (``Flags.summary``): the
            estimated share of wrong labels with its 95% interval, the number flagged,
            their expected precision and the budget; empty for runs before them.
    """

    run_id: str
    classes: list[str]
    backbone: str
    image_size: int
    manifest: str
    manifest_dir: str
    conf: str
    cache_dir: str
    feature_dim: int
    embedding_dim: int
    train: dict[str, Any]
    suspects: dict[str, Any]
    epoch_losses: list[float]
    features_file: str = ""
    neighbours: dict[str, Any] = field(default_factory=dict)
    duplicates: dict[str, Any] = field(default_factory=dict)
    outliers: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, Any] = field(default_factory=dict)

    @property
    def parquet_meta(self) -> dict[str, Any]:
        """What the run's Parquet files repeat of it, so each file says where it belongs."""
        keys = ("run_id", "classes", "backbone", "image_size", "manifest", "manifest_dir")
        return {k: getattr(self, k) for k in keys} | {"format_version": RUN_FORMAT}


def write_run(
    run_dir: Path,
    config: RunConfig,
    *,
    tensors: Mapping[str, np.ndarray],
    embeddings: np.ndarray,
    suspects: pa.Table,
    duplicates: pa.Table,
) -> None:
    """Write the run directory, each file atomically.

    Args:
        run_dir: the folder (created if needed).
        config: config.json's content.
        tensors: the model's tensors by name (``head.linear.weight`` (E, D),
            ``head.linear.bias`` (E,), and ``proxies`` (K, E) where the loss has them).
        embeddings: (N, E) float32, one row per manifest row (rows that aren't ``ok`` are
            ignored).
        suspects: suspects.parquet's columns, one row per manifest row.
        duplicates: duplicates.parquet, one row per member of a near-duplicate group
            (``noisyclean.duplicates.SCHEMA``).
    """
    from safetensors.numpy import save_file

    from noisyclean.duplicates import SCHEMA as DUPLICATES_SCHEMA

    run_dir = Path(run_dir)
    with atomic_path(run_dir / "model.safetensors") as tmp:
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(
            arrays, str(tmp), metadata={"run_id": config.run_id, "format_version": str(RUN_FORMAT)}
        )
    write_json(
        run_dir / "config.json",
        {"format_version": RUN_FORMAT, "noisyclean_version": __version__, **asdict(config)},
    )
    ok = pc.equal(suspects.column("status"), "ok").to_numpy(zero_copy_only=False)
    embedding_table = pa.table(
        {
            "id": suspects.column("id"),
            "status": suspects.column("status"),
            "embedding": list_column(embeddings, ok),
        }
    )
    _write_table(
        run_dir / "embeddings.parquet",
        embedding_table,
        schema=EMBEDDINGS_SCHEMA,
        metadata=config.parquet_meta,
    )
    _write_table(
        run_dir / "suspects.parquet", suspects, schema=SUSPECTS_SCHEMA, metadata=config.parquet_meta
    )
    _write_table(
        run_dir / "duplicates.parquet",
        duplicates,
        schema=DUPLICATES_SCHEMA,
        metadata=config.parquet_meta,
    )


def read_run_config(run_dir: Path) -> RunConfig:
    """Read and check a run directory's config.json (and that its files exist)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such run directory (written by `noisyclean train`)")
    for name in RUN_FILES:
        if not (run_dir / name).is_file():
            raise ArtifactError(f"{run_dir}: not a run directory ({name} missing)")
    path = run_dir / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    version = raw.get("format_version")
    _check_version(
        path,
        "run config",
        None if version is None else str(version),
        str(raw.get("noisyclean_version")) if "noisyclean_version" in raw else None,
        RUN_FORMAT,
    )

    def fail(key: str) -> Any:
        return lambda why: ArtifactError(f"{path}: '{key}' {why}")

    def get(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise ArtifactError(
                f"{path}: key '{key}' missing; was it written by `noisyclean train`?"
            )
        value = raw[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ArtifactError(f"{path}: '{key}' is {value!r}, of the wrong type")
        return value

    train = get("train", dict)
    config = RunConfig(
        run_id=get("run_id", str),
        classes=_classes(get("classes", list), fail("classes")),
        backbone=get("backbone", str),
        image_size=_image_size(get("image_size", int), raw.get("features_file"), fail),
        manifest=get("manifest", str),
        manifest_dir=get("manifest_dir", str),
        conf=get("conf", str),
        cache_dir=get("cache_dir", str),
        feature_dim=_positive_int(get("feature_dim", int), fail("feature_dim")),
        embedding_dim=_positive_int(train.get("embedding_dim"), fail("train.embedding_dim")),
        train=train,
        suspects=get("suspects", dict),
        epoch_losses=get("epoch_losses", list),
        features_file=raw.get("features_file", "") or "",
        neighbours=_optional_dict(raw, "neighbours"),
        duplicates=_optional_dict(raw, "duplicates"),
        outliers=_optional_dict(raw, "outliers"),
        noise=_optional_dict(raw, "noise"),
    )
    if not isinstance(config.features_file, str):
        raise ArtifactError(f"{path}: 'features_file' is not a string")
    if not config.run_id or not config.backbone:
        raise ArtifactError(f"{path}: 'run_id' and 'backbone' must not be empty")
    return config


def _optional_dict(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _read_run_table(path: Path, config: RunConfig, required: Sequence[str]) -> pa.Table:
    """One of a run's Parquet files, with its columns, the run's format and its run_id
    checked against config.json."""
    table = _read_table(path, f"{path.name} from `noisyclean train`", required)
    meta = _Meta(path, table.schema.metadata, path.name)
    meta.version(RUN_FORMAT)
    if meta.text("run_id") != config.run_id:
        raise meta.fail(
            "run_id", f"is {meta.text('run_id')!r}, but config.json's is {config.run_id!r}"
        )
    return table


def read_suspects(run_dir: Path, config: RunConfig) -> pa.Table:
    """A run's suspects.parquet as an Arrow table, checked against its config.json
    (vectorised: a million rows cost no Python object each)."""
    path = Path(run_dir) / "suspects.parquet"
    table = _read_run_table(path, config, SUSPECTS_SCHEMA.names)
    for column, allowed, what in (
        ("status", STATUSES, "a status"),
        ("label", config.classes, "a class of the run"),
    ):
        values = table.column(column).cast(pa.string())
        known = pc.is_in(values, value_set=pa.array(list(allowed), type=pa.string()))
        bad = np.flatnonzero(~known.to_numpy(zero_copy_only=False))
        if len(bad):
            i = int(bad[0])
            raise ArtifactError(
                f"{path}: row {i + 1}: {column} {values[i].as_py()!r} is not {what}"
            )
    return table


def read_duplicates(run_dir: Path, config: RunConfig) -> pa.Table:
    """A run's duplicates.parquet (one row per member of a near-duplicate group), checked
    against its config.json."""
    from noisyclean.duplicates import SCHEMA as DUPLICATES_SCHEMA

    return _read_run_table(Path(run_dir) / "duplicates.parquet", config, DUPLICATES_SCHEMA.names)


def read_model(run_dir: Path, config: RunConfig) -> dict[str, np.ndarray]:
    """A run's model.safetensors as float32 arrays, shapes checked against config.json."""
    from safetensors import SafetensorError, safe_open

    path = Path(run_dir) / "model.safetensors"
    try:
        with safe_open(str(path), framework="numpy") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            stored = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})"
        ) from None
    if stored.get("run_id") != config.run_id:
        raise ArtifactError(
            f"{path}: run_id {stored.get('run_id')!r} is not config.json's {config.run_id!r}"
        )
    e, d, k = config.embedding_dim, config.feature_dim, len(config.classes)
    expected = {"head.linear.weight": (e, d), "head.linear.bias": (e,)}
    if "proxies" in tensors:
        expected["proxies"] = (k, e)
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{path}: tensor '{name}' missing")
        if tuple(tensors[name].shape) != shape:
            raise ArtifactError(
                f"{path}: tensor '{name}' has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
    return {k: v.astype(np.float32, copy=False) for k, v in tensors.items()}


# --------------------------------------------------------------------------- embeddings


def write_embeddings(path: Path, frame: pd.DataFrame, *, metadata: Mapping[str, Any]) -> None:
    """Write ``embed``'s output: ``frame``'s ``id``, ``status``, ``embedding`` (a float32
    array per ``ok`` row, None for the others) and its other columns (e.g. ``path``)."""
    ok = (frame["status"] == "ok").to_numpy()
    first = next((e for e, o in zip(frame["embedding"], ok, strict=True) if o), None)
    width = 0 if first is None else len(first)
    values = np.zeros((len(frame), width), dtype=np.float32)
    if ok.any():
        values[ok] = np.stack(list(frame["embedding"][ok]))
    _write_parquet(
        path,
        frame.drop(columns="embedding"),
        schema=EMBEDDINGS_SCHEMA,
        metadata={**metadata, "format_version": EMBEDDINGS_FORMAT},
        lists={"embedding": list_column(values, ok)},
    )
