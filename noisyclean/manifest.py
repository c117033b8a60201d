"""Manifests: a CSV or Parquet table of ``path,label`` rows, validated, one row per sample.

Rows are never dropped. A row whose image is missing gets ``status="missing"`` here, and
one whose image we may not look at (a folder without permission) ``status="unreadable"``;
one whose image can't be decoded gets ``status="unreadable"`` later, when its features
are extracted (decoding every image twice would double the cost of a run).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from noisyclean.errors import NoisyCleanError

STATUSES = ("ok", "missing", "unreadable")
SPLITS = ("train", "test")


class ManifestError(NoisyCleanError):
    """A manifest that can't be used at all."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes:
        frame: one row per input row, in input order, with string columns ``id``,
            ``path`` (as given), ``label``, ``split`` and ``status``, plus
            ``true_label`` and any other input column, carried through.
        source: the manifest file.
        root: the folder relative paths are resolved against.
        classes: the sorted distinct labels.
    """

    frame: pd.DataFrame
    source: Path
    root: Path
    classes: list[str]

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def resolved_paths(self) -> list[Path]:
        return [resolve_path(self.root, p) for p in self.frame["path"]]

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


def resolve_path(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file with every column as given (labels and ids stay strings).

    A Parquet file's named index (``df.set_index("id").to_parquet(...)``) becomes a
    column; an unnamed one is dropped. Rows are numbered 0..N-1.
    """
    if not path.exists():
        raise ManifestError(f"{path}: no such file")
    if path.is_dir():
        raise ManifestError(f"{path}: is a folder, not a manifest (.csv or .parquet)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            named = [name for name in frame.index.names if name is not None]
            if named:
                frame = frame.reset_index(level=named)
            return frame.reset_index(drop=True)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ManifestError(f"{path}: not a readable manifest ({first})") from None


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


def load_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: a ``.csv`` or ``.parquet`` file with columns ``path`` and ``label``.
        check_files: mark rows whose file does not exist as ``missing``, and those we
            may not look at (a folder without permission) as ``unreadable``.

    Raises:
        ManifestError: one line naming the row or column, for every problem that
            makes the whole manifest unusable.
    """
    source = Path(path).expanduser().resolve()
    df = read_table(source)
    where = source.name
    for col in ("path", "label"):
        if col not in df.columns:
            found = ", ".join(map(str, df.columns)) or "none"
            raise ManifestError(f"{where}: no '{col}' column (columns found: {found})")
    if len(df) == 0:
        raise ManifestError(f"{where}: the manifest has no rows")
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
    bad = df.index[df["path"].isna() | (df["path"].str.strip() == "")]
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
    if check_files:
        df["status"] = [_file_status(resolve_path(root, p)) for p in df["path"]]
    else:
        df["status"] = "ok"
    return Manifest(frame=df, source=source, root=root, classes=classes)


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
