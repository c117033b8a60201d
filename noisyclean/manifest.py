"""Manifests: a CSV or Parquet table of ``path,label`` rows, validated, one row per sample.

Rows are never dropped. A row whose image is missing gets ``status="missing"`` here;
one whose image can't be decoded gets ``status="unreadable"`` later, when its features
are extracted (decoding every image twice would double the cost of a run).
"""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def label_index(self) -> np.ndarray:
        """Shape (N,): each row's label as an index into ``classes``."""
        return pd.Categorical(self.frame["label"], categories=self.classes).codes.astype(np.int64)

    @property
    def train_mask(self) -> np.ndarray:
        """Shape (N,): usable rows that may be trained on."""
        return ((self.frame["status"] == "ok") & (self.frame["split"] != "test")).to_numpy()

    @property
    def ok_mask(self) -> np.ndarray:
        return (self.frame["status"] == "ok").to_numpy()


def resolve_path(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file with every column as given (labels and ids stay strings)."""
    if not path.exists():
        raise ManifestError(f"{path}: no such file")
    if path.is_dir():
        raise ManifestError(f"{path}: is a folder, not a manifest (.csv or .parquet)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ManifestError(f"{path}: not a readable manifest ({first})") from None


def _as_str(column: pd.Series) -> pd.Series:
    """Strings for every non-null value; integral floats from Parquet lose their '.0'."""

    def one(v: object) -> object:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip()

    return column.map(one).astype(object)


def load_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read and validate a manifest.

    Args:
        path: a ``.csv`` or ``.parquet`` file with columns ``path`` and ``label``.
        check_files: mark rows whose file does not exist as ``missing``.

    Raises:
        ManifestError: one line naming the row or column, for every problem that
            makes the whole manifest unusable.
    """
    source = Path(path).expanduser().resolve()
    df = read_table(source).reset_index(drop=True)
    where = source.name
    for col in ("path", "label"):
        if col not in df.columns:
            found = ", ".join(map(str, df.columns)) or "none"
            raise ManifestError(f"{where}: no '{col}' column (columns found: {found})")
    if len(df) == 0:
        raise ManifestError(f"{where}: the manifest has no rows")
    for col in ("id", "path", "label", "split", "true_label"):
        if col in df.columns:
            df[col] = _as_str(df[col])

    def row_name(i: int) -> str:
        # Row numbers count data rows from 1, as a spreadsheet shows them below the header.
        return f"{where} row {i + 1}"

    bad = df.index[df["label"].isna() | (df["label"] == "")]
    if len(bad):
        raise ManifestError(f"{row_name(bad[0])}: empty label ({len(bad)} rows have none)")
    bad = df.index[df["path"].isna() | (df["path"] == "")]
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
        raise ManifestError(f"{where}: needs at least 2 classes, found {len(classes)}")
    if not (df["split"] == "train").any():
        raise ManifestError(f"{where}: no train rows (every row has split=test)")

    root = source.parent
    if check_files:
        exists = [resolve_path(root, p).is_file() for p in df["path"]]
        df["status"] = np.where(exists, "ok", "missing")
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
