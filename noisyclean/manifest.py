"""Manifests: a CSV or Parquet table of ``path,label`` rows, validated, one row per sample.

Rows are never dropped. A row whose image is missing gets ``status="missing"`` here, and
one whose image we may not look at (a folder without permission) ``status="unreadable"``;
one whose image can't be decoded gets ``status="unreadable"`` later, when its features
are extracted (decoding every image twice would double the cost of a run). An object in
a store (a URL) is only looked at then too: one ``info()`` per object, when its cache
key is made (``noisyclean.sources``).

The manifest itself may be a URL, and its ``path`` values may be URLs (``s3://``,
``gs://``, ``http(s)://``), relative paths (against the manifest's folder, local or
remote) or local paths. A Parquet manifest may carry the images themselves in an
``image`` column, the Hugging Face ``Image`` struct ``{bytes, path}`` or plain binary;
``path`` is then optional. An integer ``label`` (or ``true_label``) with Hugging Face
``ClassLabel`` names in the file's ``huggingface`` schema metadata reads as those names.

Credentials in a URL (user info, signed query parameters) never reach ``frame``: its
``path`` column holds the redacted URL, and only ``sources`` reads with the URL as
written.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from noisyclean.errors import NoisyCleanError
from noisyclean.sources import (
    SCHEME,
    URL,
    Location,
    SourceError,
    Sources,
    as_location,
    locate,
    open_input,
    redact,
    redact_text,
)

STATUSES = ("ok", "missing", "unreadable")
SPLITS = ("train", "test")


#: The Parquet column that may hold the images themselves.
IMAGE_COLUMN = "image"
_PARQUET = (".parquet", ".pq")


class ManifestError(NoisyCleanError):
    """A manifest that can't be used at all."""


@dataclass(frozen=True)
class Embedded:
    """What a manifest file holds, beyond its validated frame, to read the images with.

    Attributes:
        paths: shape (N,), object: a row's path as written where it differs from the
            frame's (a URL whose credentials were redacted there; "" for a row with no
            image anywhere), None elsewhere; None when no row has any.
        images: shape (N,), binary: the image bytes embedded in the manifest, null where
            a row has none; None when the manifest has no ``image`` column.
    """

    paths: np.ndarray | None = None
    images: pa.Array | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes:
        frame: one row per input row, in input order, with string columns ``id``,
            ``path`` (as given, a URL's credentials redacted), ``label``, ``split`` and
            ``status``, plus ``true_label`` and any other input column, carried through
            (the ``image`` column excepted: see ``embedded``).
        source: the manifest file (a ``Path``) or object (a ``URL``).
        root: the folder relative paths are resolved against (a ``Path`` or a ``URL``).
        classes: the sorted distinct labels.
        embedded: the rows' image bytes and credential-bearing paths, as read from the
            manifest; None when this manifest was made from another file's rows (a
            conf.parquet, a subset), in which case ``sources`` reads them from
            ``source`` again, joined by id.
    """

    frame: pd.DataFrame
    source: Location
    root: Location
    classes: list[str]
    embedded: Embedded | None = None

    def __post_init__(self) -> None:
        # A URL that went through Path() (a conf.parquet's manifest_dir) is one again.
        object.__setattr__(self, "source", as_location(self.source))
        object.__setattr__(self, "root", as_location(self.root))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def resolved_paths(self) -> list[Location]:
        """Each row's path resolved against ``root`` (a URL's credentials redacted);
        ``sources`` is what reads the images."""
        return [locate(self.root, p) for p in self.frame["path"]]

    @cached_property
    def sources(self) -> Sources:
        """Where each row's image comes from (a file, an object, embedded bytes), computed
        once: what ``noisyclean.features`` keys and decodes."""
        embedded = self.embedded if self.embedded is not None else _embedded_again(self)
        return _sources(self.frame, self.root, embedded)

    @cached_property
    def label_index(self) -> np.ndarray:
        """Shape (N,), read-only, computed once: each row's label as an index into ``classes``."""
        codes = pd.Categorical(self.frame["label"], categories=self.classes).codes
        return _read_only(codes.astype(np.int64))

    @cached_property
    def train_mask(self) -> np.ndarray:
        """Shape (N,), read-only, computed once: usable rows that may be trained on."""
        return _read_only(self.ok_mask & (self.frame["split"] != "test").to_numpy())

    @property
    def ok_mask(self) -> np.ndarray:
        return (self.frame["status"] == "ok").to_numpy()

    def with_status(self, status: np.ndarray) -> Manifest:
        """A copy whose ``status`` column is ``status`` (shape (N,), values of ``STATUSES``).

        Its ``train_mask`` follows the new status; ``self`` is unchanged.
        """
        status = np.asarray(status, dtype=object)
        if status.shape != (len(self),) or not np.isin(status, STATUSES).all():
            raise ValueError(f"status must be {len(self)} values of {', '.join(STATUSES)}")
        return dataclasses.replace(self, frame=self.frame.assign(status=status))


def _read_only(a: np.ndarray) -> np.ndarray:
    # Cached arrays are shared by every caller: one that wrote to them would change them all.
    a.flags.writeable = False
    return a


def resolve_path(root: Location, path: str) -> Location:
    """``path`` resolved against the manifest's folder (see ``sources.locate``)."""
    return locate(as_location(root), path)


@dataclass(frozen=True)
class ManifestTable:
    """A manifest file as read, before validation.

    Attributes:
        frame: every column but ``image``, as given.
        image: the ``image`` column as stored (Parquet only), else None.
        image_position: where ``image`` stood among the columns.
        metadata: the Parquet schema's key-value metadata (``huggingface`` among them).
    """

    frame: pd.DataFrame
    image: pa.ChunkedArray | None = None
    image_position: int = 0
    metadata: dict[bytes, bytes] = dataclasses.field(default_factory=dict)

    def class_names(self, column: str) -> list[str] | None:
        """The Hugging Face ``ClassLabel`` names of ``column``, when the file has them."""
        raw = self.metadata.get(b"huggingface")
        if not raw:
            return None
        try:
            feature = json.loads(raw)["info"]["features"][column]
        except (ValueError, KeyError, TypeError):
            return None
        names = feature.get("names") if isinstance(feature, dict) else None
        if feature.get("_type") != "ClassLabel" or not isinstance(names, list):
            return None
        return [str(n) for n in names]


def read_manifest_table(location: str | os.PathLike[str]) -> ManifestTable:
    """Read a CSV or Parquet manifest (a local file or a URL), every column as given
    (labels and ids stay strings); a Parquet ``image`` column is kept apart, as Arrow.

    A Parquet file's named index (``df.set_index("id").to_parquet(...)``) becomes a
    column; an unnamed one is dropped. Rows are numbered 0..N-1.
    """
    where = as_location(location)
    if isinstance(where, Path):
        if not where.exists():
            raise ManifestError(f"{where}: no such file")
        if where.is_dir():
            raise ManifestError(f"{where}: is a folder, not a manifest (.csv or .parquet)")
    try:
        with open_input(where) as fh:
            if where.suffix.lower() in _PARQUET:
                return _parquet_table(pq.read_table(fh))
            frame = pd.read_csv(fh, dtype=str, keep_default_na=False, na_values=[""])
            return ManifestTable(frame=frame)
    except FileNotFoundError:
        raise ManifestError(f"{where}: no such file") from None
    except SourceError as err:
        raise ManifestError(f"{where}: cannot read the manifest ({err.reason})") from None
    except (
        ValueError,
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pa.ArrowException,
    ) as err:
        text = redact_text(str(err).strip())
        first = text.splitlines()[0] if text else type(err).__name__
        raise ManifestError(f"{where}: not a readable manifest ({first})") from None


def _binary(kind: pa.DataType) -> bool:
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _holds_images(kind: pa.DataType) -> bool:
    """Whether an ``image`` column holds images: binary, or a struct with a binary
    ``bytes`` field (Hugging Face's ``Image``). Any other ``image`` column is an ordinary
    column, carried through like the others."""
    if pa.types.is_struct(kind):
        at = kind.get_field_index("bytes")
        return at >= 0 and _binary(kind.field(at).type)
    return _binary(kind)


def _parquet_table(table: pa.Table) -> ManifestTable:
    metadata = dict(table.schema.metadata or {})
    image, position = None, 0
    if IMAGE_COLUMN in table.column_names and _holds_images(table.schema.field(IMAGE_COLUMN).type):
        position = table.column_names.index(IMAGE_COLUMN)
        image = table.column(IMAGE_COLUMN)
        table = table.remove_column(position)
    frame = table.to_pandas()
    named = [name for name in frame.index.names if name is not None]
    if named:
        frame = frame.reset_index(level=named)
    return ManifestTable(
        frame=frame.reset_index(drop=True), image=image, image_position=position, metadata=metadata
    )


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """``read_manifest_table(path).frame``: every column but a Parquet ``image`` column."""
    return read_manifest_table(path).frame


def _as_str(column: pd.Series, *, strip: bool = True) -> pd.Series:
    """Strings for every non-null value, ``None`` for every null (None, NaN, pd.NA, NaT).

    Integral floats from Parquet lose their '.0' (``3.0`` -> ``"3"``); other values keep
    ``str()``'s form (Int64 ``3`` -> ``"3"``, ``True`` -> ``"True"``). ``strip`` trims
    surrounding whitespace.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Each category once, then picked by code: -1 (a null) picks the None appended.
        names = np.array([*_as_str(pd.Series(column.cat.categories), strip=strip), None])
        return pd.Series(names[column.cat.codes.to_numpy()], index=column.index, dtype=object)
    null = column.isna().to_numpy()
    text = column.astype(object).where(~null, "").astype(str)
    out = (text.str.strip() if strip else text).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(values) & (values == np.trunc(values))
        # Python ints, not int64: a float past 2**63 keeps every digit, as str(int(v)) does.
        ints = np.frompyfunc(int, 1, 1)(values[whole])
        out[whole] = pd.Series(ints, dtype=object).astype(str).to_numpy(dtype=object)
    out[null] = None
    return pd.Series(out, index=column.index, dtype=object)


def _file_status(path: Path) -> str:
    """One row's status: ``ok``, ``missing`` (nothing there, or a folder) or ``unreadable``.

    ``unreadable``: the path can't be looked at (a folder without permission, an I/O
    error), so the image may exist.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return "missing"
    except OSError as err:
        return "missing" if err.errno in (errno.ELOOP, errno.ENAMETOOLONG) else "unreadable"
    return "ok" if stat.S_ISREG(mode) else "missing"


def _source_location(path: str | os.PathLike[str]) -> Location:
    where = as_location(path)
    return where.expanduser().resolve() if isinstance(where, Path) else where


def _image_column(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array | None]:
    """(bytes, paths) of an ``image`` column (``_holds_images``): binary, null where a row
    has no bytes, and for the Hugging Face struct its ``path`` field as strings (else None)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_struct(array.type):
        return array, None
    data = pc.struct_field(array, "bytes")
    paths = None
    if array.type.get_field_index("path") >= 0:
        paths = pc.struct_field(array, "path")
        if pa.types.is_large_string(paths.type):
            paths = paths.cast(pa.string())
        elif not pa.types.is_string(paths.type):
            paths = None
    if array.null_count:  # a null struct has no bytes, whatever its fields say
        data = pc.if_else(array.is_valid(), data, pa.scalar(None, data.type))
        if paths is not None:
            paths = pc.if_else(array.is_valid(), paths, pa.scalar(None, paths.type))
    return data, paths


def _class_names(table: ManifestTable, df: pd.DataFrame, where: str) -> None:
    """Integer ``label`` / ``true_label`` columns coded with ClassLabel names become
    the names, in place."""
    for col in ("label", "true_label"):
        names = table.class_names(col) if col in df.columns else None
        if names is None or not pd.api.types.is_integer_dtype(df[col].dtype):
            continue
        codes = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
        # -1 is Hugging Face's "no label": empty, like a null.
        empty = np.isnan(codes) | (codes == -1)
        bad = np.flatnonzero(~empty & ((codes < 0) | (codes >= len(names))))
        if len(bad):
            raise ManifestError(
                f"{where} row {bad[0] + 1}: {col} {int(codes[bad[0]])} is not a ClassLabel "
                f"index of the file's metadata (0 to {len(names) - 1})"
            )
        lookup = np.array([*names, None], dtype=object)
        df[col] = lookup[np.where(empty, len(names), codes).astype(np.int64)]


def _redacted_paths(paths: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """(paths with credentials removed, the paths as written where they differ or None)."""
    text = paths.fillna("")
    suspect = np.flatnonzero(
        (text.str.match(SCHEME) & text.str.contains(r"[?#@]")).to_numpy(dtype=bool)
    )
    if not len(suspect):
        return paths, None
    written = paths.to_numpy(dtype=object)
    clean = written.copy()
    clean[suspect] = [redact(str(p)) for p in written[suspect]]
    changed = clean != written
    if not changed.any():
        return paths, None
    originals = np.full(len(written), None, dtype=object)
    originals[changed] = written[changed]
    return pd.Series(clean, index=paths.index, dtype=object), originals


def load_manifest(path: str | os.PathLike[str], *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: a ``.csv`` or ``.parquet`` file (or a URL of one) with columns ``path``
            and ``label``; with an ``image`` column of embedded images, ``path`` is
            optional.
        check_files: mark rows whose local file does not exist as ``missing``, and
            those we may not look at (a folder without permission) as ``unreadable``.
            Objects in a store are looked at later, once each, when their features are
            keyed; rows with neither an image nor a path are ``missing``.

    Raises:
        ManifestError: one line naming the row or column, for every problem that
            makes the whole manifest unusable.
    """
    source = _source_location(path)
    return manifest_from_table(read_manifest_table(source), source, check_files=check_files)


def manifest_from_table(
    table: ManifestTable, source: Location, *, check_files: bool = True
) -> Manifest:
    """``load_manifest`` of a table already read from ``source`` (``table`` is left as is)."""
    df = table.frame.copy()
    where = source.name
    images: pa.Array | None = None
    image_paths: pa.Array | None = None
    if table.image is not None:
        images, image_paths = _image_column(table.image)
    for col in ("path", "label") if images is None else ("label",):
        if col not in df.columns:
            found = ", ".join(map(str, df.columns)) or "none"
            raise ManifestError(f"{where}: no '{col}' column (columns found: {found})")
    if len(df) == 0:
        raise ManifestError(f"{where}: the manifest has no rows")
    _class_names(table, df, where)
    for col in ("id", "path", "label", "split", "true_label"):
        if col in df.columns:
            # Paths stay as written: " a.png" is a file name, not a typo.
            df[col] = _as_str(df[col], strip=col != "path")

    def row_name(i: int) -> str:
        # Row numbers count data rows from 1, as a spreadsheet shows them below the header.
        return f"{where} row {i + 1}"

    bad = df.index[df["label"].isna() | (df["label"] == "")]
    if len(bad):
        raise ManifestError(f"{row_name(bad[0])}: empty label ({len(bad)} rows have none)")
    no_path = (
        df["path"].isna() | (df["path"].str.strip() == "")
        if "path" in df.columns
        else pd.Series(True, index=df.index)
    )
    if images is None:
        bad = df.index[no_path]
        if len(bad):
            raise ManifestError(f"{row_name(bad[0])}: empty path ({len(bad)} rows have none)")

    if "id" in df.columns:
        bad = df.index[df["id"].isna() | (df["id"] == "")]
        if len(bad):
            raise ManifestError(f"{row_name(bad[0])}: empty id")
        dup = df.index[df["id"].duplicated()]
        if len(dup):
            first = df["id"].iloc[dup[0]]
            earlier = int(df.index[df["id"] == first][0])
            raise ManifestError(
                f"{row_name(dup[0])}: duplicate id '{first}' (first seen at row {earlier + 1})"
            )
    else:
        df.insert(0, "id", [str(i) for i in range(len(df))])

    if "split" in df.columns:
        df["split"] = df["split"].fillna("train").str.lower()
        bad = df.index[~df["split"].isin(SPLITS)]
        if len(bad):
            raise ManifestError(
                f"{row_name(bad[0])}: split is '{df['split'].iloc[bad[0]]}', expected train or test"
            )
    else:
        df["split"] = "train"

    classes = sorted(df["label"].unique())
    if len(classes) < 2:
        raise ManifestError(
            f"{where}: needs at least 2 classes in the 'label' column, found {len(classes)}"
        )
    if not (df["split"] == "train").any():
        raise ManifestError(f"{where}: no train rows (every row has split=test)")

    root = source.parent
    nowhere = np.zeros(len(df), dtype=bool)  # rows with no bytes and no path: no image
    if images is not None:
        # A row without a path is named by its embedded image's own path, else by its
        # place in the manifest: "train.parquet#<id>".
        named = no_path.to_numpy(dtype=bool)
        ids = df["id"].to_numpy(dtype=object)
        inner = pd.Series(None, index=df.index, dtype=object)
        if image_paths is not None:
            inner[:] = image_paths.to_numpy(zero_copy_only=False)
            inner = inner.where(inner.notna() & (inner.astype(str).str.strip() != ""), None)
        nowhere = named & inner.isna().to_numpy() & ~_valid(images)
        synthetic = pd.Series([f"{where}#{i}" for i in ids], index=df.index, dtype=object)
        own = df["path"] if "path" in df.columns else pd.Series(None, index=df.index)
        paths = own.astype(object).where(~named, inner.fillna(synthetic))
        if "path" in df.columns:
            df["path"] = paths
        else:
            df.insert(1, "path", paths)
    df["path"], written = _redacted_paths(df["path"])
    if nowhere.any():
        written = written if written is not None else np.full(len(df), None, dtype=object)
        written[nowhere] = ""  # sources: no location
    embedded = Embedded(paths=written, images=images)
    if check_files:
        df["status"] = _statuses(df, root, embedded)
    else:
        df["status"] = "ok"
    df.loc[nowhere, "status"] = "missing"
    return Manifest(frame=df, source=source, root=root, classes=classes, embedded=embedded)


def _valid(images: pa.Array) -> np.ndarray:
    return np.asarray(images.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _statuses(df: pd.DataFrame, root: Location, embedded: Embedded) -> np.ndarray:
    """Each row's status before decoding: embedded images and objects in a store are
    ``ok`` (an object is looked at when it is keyed); local files are ``stat``-ed."""
    status = np.full(len(df), "ok", dtype=object)
    local = ~df["path"].str.match(SCHEME).to_numpy(dtype=bool)
    if isinstance(root, URL):  # relative paths of a remote manifest are objects too
        local &= df["path"].map(lambda p: Path(p).expanduser().is_absolute()).to_numpy(bool)
    if embedded.images is not None:
        local &= ~_valid(embedded.images)
    rows = np.flatnonzero(local)
    status[rows] = [
        _file_status(Path(locate(root, p))) for p in df["path"].to_numpy(dtype=object)[rows]
    ]
    return status


def _sources(frame: pd.DataFrame, root: Location, embedded: Embedded) -> Sources:
    paths = frame["path"].to_numpy(dtype=object)
    if embedded.paths is not None:
        paths = np.where(pd.notna(embedded.paths), embedded.paths, paths)
    locations = [locate(root, p) if isinstance(p, str) and p else None for p in paths]
    return Sources(locations, images=embedded.images, names=list(frame["path"]))


def row_sources(
    source: str | os.PathLike[str],
    root: str | os.PathLike[str],
    ids: list[str],
    paths: list[str],
) -> Sources:
    """Where the images of some rows of a manifest are, from what a run recorded: the
    manifest (``source``), its folder (``root``), and the rows' ids and paths. Embedded
    images and credential-bearing URLs are read from the manifest again (``Manifest.sources``).
    """
    frame = pd.DataFrame({"id": ids, "path": paths}, dtype=object)
    manifest = Manifest(frame=frame, source=as_location(source), root=as_location(root), classes=[])
    return manifest.sources


def _embedded_again(manifest: Manifest) -> Embedded:
    """The image bytes and credential-bearing paths of ``manifest``'s rows, read again
    from its source file and joined by id: for rows rebuilt from a conf.parquet or a
    subset of rows. Only rows whose path still matches are taken; an empty ``Embedded``
    when the file is gone or holds neither."""
    frame = manifest.frame
    source = manifest.source
    urls = frame["path"].str.match(SCHEME).any() or isinstance(manifest.root, URL)
    has_images = False
    if source.suffix.lower() in _PARQUET:
        try:
            if isinstance(source, URL):
                has_images = True  # a remote schema costs a read anyway
            else:
                has_images = IMAGE_COLUMN in pq.read_schema(source).names
        except (OSError, ValueError, pa.ArrowException):
            return Embedded()
    if not (urls or has_images):
        return Embedded()
    try:
        full = load_manifest(source, check_files=False)
    except (NoisyCleanError, OSError, ValueError):
        return Embedded()
    assert full.embedded is not None
    if full.embedded.paths is None and full.embedded.images is None:
        return Embedded()
    at = pd.Index(full.frame["id"]).get_indexer(frame["id"])
    same = at >= 0
    same[same] = (
        full.frame["path"].to_numpy(dtype=object)[at[same]]
        == frame["path"].to_numpy(dtype=object)[same]
    )
    take = np.where(same, at, -1)
    paths = None
    if full.embedded.paths is not None:
        paths = np.full(len(frame), None, dtype=object)
        paths[same] = full.embedded.paths[take[same]]
    images = None
    if full.embedded.images is not None:
        images = full.embedded.images.take(pa.array(take, mask=~same))
    return Embedded(paths=paths, images=images)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def manifest_from_images(source: str | Path) -> Manifest:
    """An unlabelled manifest of one image file, or of every image under a folder.

    Ids are the paths relative to the folder; every row is a ``test`` row.
    """
    src = Path(source).expanduser().resolve()
    if src.is_file():
        root, files = src.parent, [src]
    elif src.is_dir():
        root = src
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ManifestError(f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    else:
        raise ManifestError(f"{src}: no such file or folder")
    rel = [str(p.relative_to(root)) for p in files]
    frame = pd.DataFrame({"id": rel, "path": rel, "label": None, "split": "test", "status": "ok"})
    return Manifest(frame=frame, source=src, root=root, classes=[])
