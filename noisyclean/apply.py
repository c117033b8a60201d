"""Review decisions applied to a manifest: relabel rows, set dropped rows aside, lose none.

``decisions.csv`` has the columns ``id,decision,new_label``; ``decision`` is ``keep``,
``relabel`` (with a non-empty ``new_label``) or ``drop``. A manifest row that the file
does not name is kept. The cleaned manifest keeps the input's columns and row order;
the dropped rows go, unchanged, to a sidecar named like the output with ``.dropped``
before its extension, so that rows in = rows out + rows dropped.

The manifest and the output may be URLs (``s3://``, ``gs://``...; see
``noisyclean.sources``). A local output is written atomically (a temporary file, then a
rename); a remote one is written locally, then uploaded in one ``put_file`` (one PUT, or
one multipart upload completed at once), so a reader sees the old object or the new
one. A Parquet manifest's ``image`` column and its Hugging Face metadata are carried
through; an integer ``label`` coded with ``ClassLabel`` names stays coded (a relabel
names a class, and is written as its index).

The manifest's rows are the user's own: their paths are written as given, credentials
in a URL included (the cleaned manifest must still reach the images). Everything
noisyclean writes about the rows (conf.parquet, runs, the review page) holds them
redacted.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from noisyclean.artifacts import atomic_path
from noisyclean.errors import NoisyCleanError
from noisyclean.manifest import (
    IMAGE_COLUMN,
    ManifestTable,
    manifest_from_table,
    read_manifest_table,
)
from noisyclean.sources import URL, Location, as_location, is_url, write_output

DECISIONS = ("keep", "relabel", "drop")
DECISION_COLUMNS = ("id", "decision", "new_label")
_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")


class DecisionsError(NoisyCleanError):
    """A decisions file, or an output path, that ``apply`` refuses."""


@dataclass(frozen=True)
class ApplySummary:
    """What ``apply`` wrote.

    Attributes:
        output: the cleaned manifest.
        dropped_path: the sidecar holding the dropped rows.
        rows_in: rows of the input manifest.
        kept: rows written unchanged (no decision, ``keep``, or a relabel to the same label).
        relabelled: rows relabelled, per ``(from, to)`` label pair.
        dropped: rows moved to the sidecar.
        decisions: rows of the decisions file.
        warnings: one line each, about what ``apply`` did but the user may not expect.
    """

    output: Location
    dropped_path: Location
    rows_in: int
    kept: int
    dropped: int
    decisions: int
    relabelled: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def rows_out(self) -> int:
        return self.kept + sum(self.relabelled.values())


def dropped_path(output: Location) -> Location:
    """``clean.csv`` → ``clean.dropped.csv`` (a URL's too)."""
    if isinstance(output, URL):
        stem = output.name[: len(output.name) - len(output.suffix)]
        return output.with_name(f"{stem}.dropped{output.suffix}")
    output = Path(output)
    return output.with_name(f"{output.stem}.dropped{output.suffix}")


def _same_file(a: Location, b: Location) -> bool:
    if isinstance(a, URL) or isinstance(b, URL):
        return isinstance(a, URL) and isinstance(b, URL) and a.object_id == b.object_id
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_outputs(manifest: Location, decisions: Path, output: Location) -> Location:
    """The sidecar path, once neither output would overwrite an input."""
    if output.suffix.lower() not in _CSV + _PARQUET:
        raise DecisionsError(f"{output}: the output must end in .csv or .parquet")
    sidecar = dropped_path(output)
    for target, what in ((output, "output"), (sidecar, "dropped-rows sidecar")):
        for source, name in ((manifest, "manifest"), (decisions, "decisions file")):
            if _same_file(target, source):
                raise DecisionsError(
                    f"{target}: the {what} would overwrite the {name}; choose another -o"
                )
    return sidecar


def _check_field_counts(path: Path) -> None:
    """Refuse the first CSV row with more fields than the header, naming it.

    pandas' own error counts file lines, blank ones included, and reads a file whose
    every row has one field too many without complaint, its first column as the index.
    """
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = (row for row in csv.reader(fh) if row)  # pandas skips blank lines too
            header = [field.strip() for field in next(rows, [])]
            for i, row in enumerate(rows):
                if len(row) > len(header):
                    raise DecisionsError(
                        f"{path.name} row {i + 1}: too many fields ({len(row)}, expected "
                        f"{len(header)}: {','.join(header)})"
                    )
    except csv.Error:
        pass  # not CSV enough to count: pandas' own message says why


def read_decisions(path: Path) -> pd.DataFrame:
    """decisions.csv (or .parquet) as strings: columns id, decision (lower-cased), new_label.

    A CSV row with fewer fields than the header has its last ones empty (``r01,drop`` is
    a drop); one with more is refused, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DecisionsError(f"{path}: no such file")
    try:
        if path.suffix.lower() in _PARQUET:
            frame = pd.read_parquet(path).astype(object)
            frame = frame.where(frame.notna(), "").astype(str)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
            if not isinstance(frame.index, pd.RangeIndex):
                _check_field_counts(path)
    except pd.errors.EmptyDataError:
        raise DecisionsError(
            f"{path}: empty file; expected a header {','.join(DECISION_COLUMNS)}"
        ) from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        if isinstance(err, pd.errors.ParserError):
            _check_field_counts(path)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DecisionsError(f"{path}: not a readable decisions file ({first})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in DECISION_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns) or "none"
        raise DecisionsError(
            f"{path.name}: missing column(s) {', '.join(missing)} "
            f"(expected {','.join(DECISION_COLUMNS)}; found {found})"
        )
    frame = frame[list(DECISION_COLUMNS)].apply(lambda col: col.str.strip())
    frame["decision"] = frame["decision"].str.lower()
    return frame.reset_index(drop=True)


def _validate(
    decisions: pd.DataFrame,
    *,
    name: str,
    ids: set[str],
    classes: list[str],
    allow_new_labels: bool,
) -> dict[str, tuple[str, str]]:
    """One ``id → (decision, new_label)`` per decided id, or a one-line error naming the row."""

    def where(i: int) -> str:
        # Data rows count from 1, as in noisyclean.manifest's errors.
        return f"{name} row {i + 1} (id '{decisions['id'].iat[i]}')"

    chosen: dict[str, tuple[str, str]] = {}
    first_row: dict[str, int] = {}
    known = set(classes)
    unknown_ids = []
    for i, (rid, decision, new_label) in enumerate(decisions.itertuples(index=False)):
        if rid == "":
            raise DecisionsError(f"{name} row {i + 1}: empty id")
        if decision == "":
            raise DecisionsError(f"{where(i)}: empty decision (expected keep, relabel or drop)")
        if decision not in DECISIONS:
            raise DecisionsError(
                f"{where(i)}: unknown decision '{decision}' (expected keep, relabel or drop)"
            )
        if decision == "relabel" and new_label == "":
            raise DecisionsError(f"{where(i)}: relabel needs a non-empty new_label")
        if rid not in ids:
            unknown_ids.append(i)
            continue
        # keep and drop ignore new_label, so two of them differ only by their decision.
        value = (decision, new_label if decision == "relabel" else "")
        if rid in chosen and chosen[rid] != value:
            raise DecisionsError(
                f"{where(i)}: conflicting decisions for this id ({_show(value)} here, "
                f"{_show(chosen[rid])} at row {first_row[rid] + 1})"
            )
        if decision == "relabel" and new_label not in known and not allow_new_labels:
            shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
            raise DecisionsError(
                f"{where(i)}: new_label '{new_label}' is not a label of the manifest "
                f"({shown}); allow it with --allow-new-labels"
            )
        chosen.setdefault(rid, value)
        first_row.setdefault(rid, i)
    if unknown_ids:
        more = f" and {len(unknown_ids) - 1} more" if len(unknown_ids) > 1 else ""
        raise DecisionsError(f"{where(unknown_ids[0])}: no such id in the manifest{more}")
    return chosen


def _show(value: tuple[str, str]) -> str:
    return f"relabel to '{value[1]}'" if value[0] == "relabel" else value[0]


def _with_labels(column: pd.Series, rows: np.ndarray, labels: list[str]) -> pd.Series:
    """``column`` with ``labels`` at positions ``rows``, keeping its type where the labels fit."""
    column = column.copy()
    if len(rows) == 0:
        return column
    if isinstance(column.dtype, pd.CategoricalDtype):
        new = [v for v in dict.fromkeys(labels) if v not in column.cat.categories]
        try:
            categorical: pd.Series = column.cat.add_categories(new)
            categorical.iloc[rows] = pd.Series(labels, dtype=categorical.dtype).to_numpy()
            return categorical
        except (TypeError, ValueError):
            column = column.astype(object)
    if pd.api.types.is_integer_dtype(column.dtype):
        try:
            column.iloc[rows] = [int(v) for v in labels]
            return column
        except (ValueError, OverflowError):
            pass
    if not (pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column)):
        # A numeric label column from Parquet that must now hold a text label.
        column = column.map(lambda v: v if pd.isna(v) else _label_text(v)).astype(object)
    column.iloc[rows] = labels
    return column


def _label_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _class_indices(
    relabel_to: list[str], names: list[str], *, where: str, rows: list[int], ids: np.ndarray
) -> list[str]:
    """New labels as the ClassLabel indices an integer label column is coded with."""
    index = {name: i for i, name in enumerate(names)}
    for row, label in zip(rows, relabel_to, strict=True):
        if label not in index:
            raise DecisionsError(
                f"{where} (id '{ids[row]}'): new_label '{label}' is not one of the ClassLabel "
                f"names the manifest's integer label column is coded with ({len(names)} names "
                "in its Hugging Face metadata); it can't be written there"
            )
    return [str(index[label]) for label in relabel_to]


def _table(frame: pd.DataFrame, source: ManifestTable, keep: np.ndarray) -> pa.Table:
    """``frame`` (the rows ``keep`` of ``source``) as Arrow, with ``source``'s image column
    (the same rows) back in its place and its Hugging Face metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if source.image is not None:
        image = source.image.filter(pa.array(keep))
        table = table.add_column(min(source.image_position, table.num_columns), IMAGE_COLUMN, image)
    extra = {k: v for k, v in source.metadata.items() if k == b"huggingface"}
    if extra:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    return table


def _write(frame: pd.DataFrame, path: Location, source: ManifestTable, keep: np.ndarray) -> None:
    def write(local: Path) -> None:
        if path.suffix.lower() in _PARQUET:
            pq.write_table(_table(frame, source, keep), local)
        else:
            frame.to_csv(local, index=False, lineterminator="\n")

    if isinstance(path, URL):
        write_output(path, write)  # raises NoisyCleanError naming the URL
        return
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as err:
        raise DecisionsError(f"{path}: cannot write ({err.strerror or err})") from None


def _location(location: str | os.PathLike[str]) -> Location:
    where = as_location(location)
    return where.expanduser().resolve() if isinstance(where, Path) else where


def apply_decisions(
    manifest_path: str | os.PathLike[str],
    decisions_path: str | Path,
    output: str | os.PathLike[str],
    *,
    allow_new_labels: bool = False,
) -> ApplySummary:
    """Write the cleaned manifest to ``output`` and the dropped rows beside it.

    Args:
        manifest_path: the manifest the run was made from (.csv or .parquet; a file or
            a URL). Rows are matched by its ``id`` column or, without one, by the
            0-based row number.
        decisions_path: ``decisions.csv`` exported by the review page.
        output: the cleaned manifest (.csv or .parquet, whatever the input's format; a
            file or a URL); the dropped rows go to ``dropped_path(output)``. A manifest
            with an ``image`` column can only be written as Parquet.
        allow_new_labels: accept a ``new_label`` that no manifest row has.

    Raises:
        DecisionsError: one line naming the row or file, before anything is written:
            unknown ids, unknown labels, conflicting duplicates, unknown decisions,
            missing columns, or an output that would overwrite an input.
        ManifestError: the manifest itself is unusable (see ``load_manifest``).
    """
    src = _location(manifest_path)
    dec = Path(decisions_path).expanduser().resolve()
    out = _location(output)
    sidecar = _check_outputs(src, dec, out)

    source = read_manifest_table(src)  # read once, even from a store
    manifest = manifest_from_table(source, src, check_files=False)
    raw = source.frame
    if source.image is not None and out.suffix.lower() not in _PARQUET:
        raise DecisionsError(
            f"{out}: the manifest carries its images in an '{IMAGE_COLUMN}' column, which "
            "CSV can't hold; write .parquet"
        )
    ids = manifest.frame["id"].to_numpy(dtype=object)
    labels = manifest.frame["label"].to_numpy(dtype=object)
    decisions = read_decisions(dec)
    chosen = _validate(
        decisions,
        name=dec.name,
        ids=set(ids),
        classes=manifest.classes,
        allow_new_labels=allow_new_labels,
    )

    drop = np.zeros(len(raw), dtype=bool)
    relabel_rows: list[int] = []
    relabel_to: list[str] = []
    pairs: Counter[tuple[str, str]] = Counter()
    for i, rid in enumerate(ids):
        decision, new_label = chosen.get(rid, ("keep", ""))
        if decision == "drop":
            drop[i] = True
        elif decision == "relabel" and new_label != labels[i]:
            relabel_rows.append(i)
            relabel_to.append(new_label)
            pairs[(str(labels[i]), new_label)] += 1

    for target in (sidecar, out):
        if isinstance(target, Path) and target.is_dir():
            raise DecisionsError(f"{target}: is a folder; give a file name (.csv or .parquet)")
    names = source.class_names("label")
    written_to = relabel_to
    if names is not None and pd.api.types.is_integer_dtype(raw["label"].dtype):
        written_to = _class_indices(
            relabel_to, names, where=f"{dec.name}", rows=relabel_rows, ids=ids
        )
    cleaned = raw.copy()
    cleaned["label"] = _with_labels(
        raw["label"], np.asarray(relabel_rows, dtype=np.int64), written_to
    )
    _write(raw[drop], sidecar, source, drop)
    _write(cleaned[~drop], out, source, ~drop)
    n_relabelled = len(relabel_rows)
    warnings = []
    given = raw["path"] if "path" in raw.columns else pd.Series([], dtype=object)
    relative = [  # paths of the manifest's own (not the names of embedded images)
        p
        for p in given
        if isinstance(p, str) and p and not is_url(p) and not Path(p).expanduser().is_absolute()
    ]
    if relative and str(out.parent) != str(src.parent):
        warnings.append(
            f"{out.name} is not in the manifest's folder ({src.parent}), so its "
            f"{len(relative)} relative paths no longer resolve to the images there"
        )
    return ApplySummary(
        output=out,
        dropped_path=sidecar,
        rows_in=len(raw),
        kept=int((~drop).sum()) - n_relabelled,
        dropped=int(drop.sum()),
        decisions=len(decisions),
        relabelled=dict(sorted(pairs.items())),
        warnings=tuple(warnings),
    )
