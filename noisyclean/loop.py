"""``noisyclean run``: the whole loop in one folder, redoing only what changed.

The stages are ``score`` (conf.parquet), ``train`` (the run's files, with duplicates and
outliers) and ``review`` (review.html), all written into one folder. Each stage's *key*
is a hash of its options, the fingerprints of its input files and the key of the stage
before it. ``stages.json`` in the folder records, per finished stage, its key, options,
inputs, the size and modification time of each file it wrote, and a summary. A rerun
skips a stage whose recorded key equals the new one and whose files are still as
written; it redoes a stage whose key changed, or whose files were changed or removed,
and every stage after it. The record is written atomically after each stage, so an
interrupted run keeps every stage it finished. Features always come from the cache.

``compare`` reads two such folders (a run after ``apply`` and the one before it) and
says what changed: rows, the estimated noise per class, suspects, outliers and groups.
Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from noisyclean import __version__
from noisyclean.artifacts import ArtifactError, write_json
from noisyclean.errors import NoisyCleanError
from noisyclean.sources import URL, as_location, redact, stat_url

#: The stages, in order.
STAGES = ("score", "train", "review")
#: The record of finished stages, in the run folder.
RECORD = "stages.json"
RECORD_FORMAT = 1
#: The files each stage writes into the folder.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "score": ("conf.parquet",),
    "train": (
        "config.json",
        "model.safetensors",
        "embeddings.parquet",
        "suspects.parquet",
        "duplicates.parquet",
    ),
    "review": ("review.html",),
}
_READ_BLOCK = 1 << 20


def fingerprint(location: str | os.PathLike[str]) -> str:
    """What identifies an input file's content: the SHA-256 of a local file's bytes
    (read in blocks), an object's stamp (ETag or version, size) for a URL."""
    where = as_location(location)
    if isinstance(where, URL):
        stamp = stat_url(where)
        return f"url:{redact(str(where))}:{stamp.etag}:{stamp.size}"
    digest = hashlib.sha256()
    try:
        with open(where, "rb") as fh:
            while block := fh.read(_READ_BLOCK):
                digest.update(block)
    except OSError as err:
        raise NoisyCleanError(f"{where}: cannot read ({err.strerror or err})") from None
    return f"sha256:{digest.hexdigest()}"


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def stage_key(
    stage: str, options: Mapping[str, Any], inputs: Mapping[str, str], upstream: str
) -> str:
    """The hash that decides whether ``stage`` must run again."""
    blob = json.dumps(
        {
            "stage": stage,
            "options": options,
            "inputs": inputs,
            "upstream": upstream,
            "noisyclean": __version__,  # another release may compute another result
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class Record:
    """``stages.json`` of a run folder: what each finished stage was made from.

    Attributes:
        folder: the run folder.
        stages: per finished stage, its entry (key, options, inputs, outputs, seconds,
            summary).
    """

    folder: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> Record:
        """The folder's record; empty when there is none or it can't be read (every
        stage then runs again: nothing is lost but time)."""
        path = Path(folder) / RECORD
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return cls(Path(folder))
        if not isinstance(raw, dict) or raw.get("format_version") != RECORD_FORMAT:
            return cls(Path(folder))
        stages = raw.get("stages")
        if not isinstance(stages, dict):
            return cls(Path(folder))
        return cls(Path(folder), {k: v for k, v in stages.items() if isinstance(v, dict)})

    def is_done(self, stage: str, key: str) -> bool:
        """The stage finished with this key and its files are still as it wrote them."""
        entry = self.stages.get(stage)
        if not entry or entry.get("key") != key:
            return False
        written = entry.get("outputs")
        if not isinstance(written, dict) or set(written) != set(OUTPUTS[stage]):
            return False
        return all(_stamp(self.folder / name) == stamp for name, stamp in written.items())

    def forget(self, stage: str) -> None:
        """Drop ``stage``'s entry and every later one (they are being redone), on disk too."""
        for later in STAGES[STAGES.index(stage) :]:
            self.stages.pop(later, None)
        self._write()

    def finish(
        self,
        stage: str,
        key: str,
        *,
        options: Mapping[str, Any],
        inputs: Mapping[str, str],
        seconds: float,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a finished stage (atomically), with the stamps of the files it wrote."""
        outputs = {name: _stamp(self.folder / name) for name in OUTPUTS[stage]}
        missing = [name for name, stamp in outputs.items() if stamp is None]
        if missing:
            raise NoisyCleanError(f"{self.folder}: stage {stage} did not write {missing[0]}")
        self.stages[stage] = {
            "key": key,
            "options": dict(options),
            "inputs": dict(inputs),
            "outputs": outputs,
            "seconds": round(seconds, 3),
            "summary": dict(summary or {}),
        }
        self._write()

    def _write(self) -> None:
        write_json(
            self.folder / RECORD,
            {"format_version": RECORD_FORMAT, "stages": {s: self.stages[s] for s in self.stages}},
        )

    def summary(self, stage: str) -> dict[str, Any]:
        entry = self.stages.get(stage) or {}
        value = entry.get("summary")
        return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- comparing runs


@dataclass(frozen=True)
class Change:
    """What changed between two run folders.

    Attributes:
        key: the column rows were matched by (``id``, or ``path`` when the ids are row
            numbers).
        rows: (previous, now) row counts.
        removed: rows of the previous run not in this one (dropped by ``apply``).
        added: rows of this run not in the previous one.
        relabelled: rows in both whose label differs.
        totals: metric -> (previous, now): usable rows, suspects, outliers, duplicate
            groups, overall estimated noise rate.
        noise: per class (name, previous rate, now rate, previous rows, now rows), the
            classes of either run, in this run's class order then the others.
    """

    key: str
    rows: tuple[int, int]
    removed: int
    added: int
    relabelled: int
    totals: dict[str, tuple[float | None, float | None]]
    noise: list[tuple[str, float | None, float | None, int, int]]


def _rows(folder: Path) -> pa.Table:
    path = folder / "conf.parquet"
    try:
        return pq.read_table(path, columns=["id", "path", "label"])
    except (OSError, pa.ArrowException, KeyError) as err:
        raise ArtifactError(
            f"{path}: cannot read the rows of the run ({str(err).splitlines()[0]})"
        ) from None


def _row_numbers(ids: pa.ChunkedArray) -> bool:
    n = len(ids)
    expected = pa.array(np.arange(n).astype(str), type=pa.string())
    return bool(pc.all(pc.equal(ids.cast(pa.string()), expected)).as_py() or n == 0)


def compare(previous: Path, current: Path) -> Change:
    """What changed from the run in ``previous`` to the run in ``current`` (two folders
    written by ``noisyclean run``).

    Raises:
        NoisyCleanError: a folder is not a finished run.
    """
    before, after = Record.load(previous), Record.load(current)
    for rec in (before, after):
        if "train" not in rec.stages:
            raise NoisyCleanError(
                f"{rec.folder}: not a finished `noisyclean run` folder (no train stage in {RECORD})"
            )
    old, new = _rows(Path(previous)), _rows(Path(current))
    key = "path" if _row_numbers(old["id"]) or _row_numbers(new["id"]) else "id"
    old_keys = old[key].cast(pa.string())
    new_keys = new[key].cast(pa.string())
    in_new = pc.is_in(old_keys, value_set=new_keys).to_numpy(zero_copy_only=False)
    in_old = pc.is_in(new_keys, value_set=old_keys).to_numpy(zero_copy_only=False)
    # Labels of the rows in both, matched by the key.
    where = pc.index_in(new_keys, value_set=old_keys).to_numpy(zero_copy_only=False)
    both = np.flatnonzero(in_old)
    old_labels = old["label"].cast(pa.string()).take(pa.array(where[both].astype(np.int64)))
    new_labels = new["label"].cast(pa.string()).take(pa.array(both))
    relabelled = int(pc.sum(pc.not_equal(old_labels, new_labels)).as_py() or 0)

    s0, s1 = before.summary("train"), after.summary("train")
    totals: dict[str, tuple[float | None, float | None]] = {}
    for name in ("usable", "suspects", "outliers", "groups", "noise"):
        totals[name] = (s0.get(name), s1.get(name))
    noise = []
    rates0 = dict(zip(s0.get("classes", []), s0.get("noise_rate", []), strict=False))
    rates1 = dict(zip(s1.get("classes", []), s1.get("noise_rate", []), strict=False))
    counts0 = dict(zip(s0.get("classes", []), s0.get("class_rows", []), strict=False))
    counts1 = dict(zip(s1.get("classes", []), s1.get("class_rows", []), strict=False))
    names = list(s1.get("classes", [])) + [c for c in s0.get("classes", []) if c not in rates1]
    for name in names:
        noise.append(
            (name, rates0.get(name), rates1.get(name), counts0.get(name, 0), counts1.get(name, 0))
        )
    return Change(
        key=key,
        rows=(old.num_rows, new.num_rows),
        removed=int((~in_new).sum()),
        added=int((~in_old).sum()),
        relabelled=relabelled,
        totals=totals,
        noise=noise,
    )
