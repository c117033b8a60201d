"""Near-duplicate groups on real images: calibrate the threshold, compare with Datalab.

Takes ``rows`` usable images of a labelled manifest (their labels, ``true_label`` where
every row has one, are taken as clean) and adds near-copies of a share of them, made
with fixed seeded perturbations (PIL):

- ``resize``: by a factor drawn log-uniformly from [0.5, 2] (bilinear);
- ``jpeg``: re-encoded as JPEG at a quality drawn from [60, 90];
- ``crop``: at most 8% of the side cut from each side (whole pixels; at least one).

Each copy gets a random non-empty combination of the three (each with probability
1/2; applied in the order crop, resize, JPEG); a tenth of the copied images get two
copies. Half of the copies are relabelled to another class (the ``conflict`` kind must
find them) and a fifth of the single copies are test rows (the ``leak`` kind). The
features come through ``noisyclean.features.extract_features`` (the same cache as
every other command), the neighbours from the same search Phase 1 runs (train rows
among train rows leave-one-out, test rows among train rows, k = 10).

Counted by pairs. A predicted pair is two rows in one group (for Datalab, a pair it
lists). Pairs between two original images are *natural* near-duplicates of the
dataset itself: reported separately (the top ones listed, a sample drawn to
``natural.png``), never counted. A pair with a copy in it is right when both rows come
from the same original; it is not counted either way when the two originals are
themselves near-duplicates by the same method's rule (for noisyclean, at least the
threshold similar; for Datalab, within its radius); else it is wrong (*strict*
precision counts those too). Recall is over all pairs of rows that come from one
original (original-copy and copy-copy).

:func:`run_duplicates_bench` writes ``results.json``, ``results.md``, ``natural.png``
(top and borderline natural pairs) and ``copies.png`` (the copies least similar to
their originals). The copies, the search and the Datalab run are kept in a work
folder, so a rerun costs seconds. ``benchmarks/duplicates.py`` is its command line.

Datalab needs ``cleanlab[datalab]`` (the ``bench`` extra); without it, its row says
``not installed``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from noisyclean import knn
from noisyclean.artifacts import write_text
from noisyclean.duplicates import (
    CANDIDATE_SIMILARITY,
    COSINE_THRESHOLD,
    MATCH_THRESHOLD,
    Duplicates,
    find_duplicates,
    pixel_matches,
    pool_to_rows,
)
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.images import UnreadableImageError, load_image
from noisyclean.manifest import Manifest, load_manifest
from noisyclean.pixel_match import SETTINGS, SIDE, match, thumbnail
from noisyclean.sources import URL, Blob, Location, read_source

#: The perturbations, in the order they are applied.
OPS = ("crop", "resize", "jpeg")
RESIZE = (0.5, 2.0)
QUALITY = (60, 90)
CROP_MAX = 0.08
TWO_COPIES = 0.1
RELABEL = 0.5
TEST_COPIES = 0.2
#: Pixel-match thresholds swept (at the default candidate cosine).
SWEEP = tuple(float(t) for t in np.round(np.arange(0.92, 0.9951, 0.005), 3))
#: Natural pairs checked at most to explain a sweep point's pairs (past it: precision None).
NATURAL_CAP = 200_000
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.95
#: Pairs inside groups listed one by one at most (a threshold that chains whole classes
#: into one group gets its precision counted without the natural pairs left out).
PAIR_CAP = 5_000_000
#: Two images whose greyscale pixels differ by at most this much on average (in [0, 1])
#: count as the same picture: a proxy for a true natural duplicate.
PIXEL_SAME = 0.01
#: What a copy made with no perturbation at all (``ops=()``) is called: a PNG re-save.
RESAVE = "png"
#: Image modes copied as greyscale; every other mode is copied as RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

Log = Callable[[str], None]


def c2(n: np.ndarray) -> int:
    """Pairs among n rows, summed."""
    n = np.asarray(n, dtype=np.int64)
    return int((n * (n - 1) // 2).sum())


# ---------------------------------------------------------------- the image set


def make_copy(
    image: Image.Image, rng: np.random.Generator, ops: Sequence[str] = OPS
) -> tuple[bytes, str, dict[str, Any]]:
    """A perturbed copy of ``image``: its file bytes, extension and what was done.

    Each of ``ops`` is applied with probability 1/2, at least one; with no ``ops`` the
    copy is the image saved again as PNG (``RESAVE``).
    """
    chosen: list[str] = []
    while ops and not chosen:
        chosen = [op for op in OPS if op in ops and rng.random() < 0.5]
    img = image
    params: dict[str, Any] = {"ops": "+".join(chosen) or RESAVE}
    if "crop" in chosen:
        w, h = img.size
        most = max(int(CROP_MAX * min(w, h)), 1)
        sides = rng.integers(0, most + 1, size=4)
        if sides.sum() == 0:
            sides[rng.integers(4)] = 1
        left, top, right, bottom = (int(v) for v in sides)
        img = img.crop((left, top, w - right, h - bottom))
        params["crop"] = [left, top, right, bottom]
    if "resize" in chosen:
        factor = float(np.exp(rng.uniform(np.log(RESIZE[0]), np.log(RESIZE[1]))))
        w, h = img.size
        img = img.resize(
            (max(round(w * factor), 1), max(round(h * factor), 1)), Image.Resampling.BILINEAR
        )
        params["factor"] = round(factor, 4)
    buf = io.BytesIO()
    if "jpeg" in chosen:
        quality = int(rng.integers(QUALITY[0], QUALITY[1] + 1))
        img.save(buf, "JPEG", quality=quality)
        params["quality"] = quality
        return buf.getvalue(), ".jpg", params
    img.save(buf, "PNG")
    return buf.getvalue(), ".png", params


@dataclass(frozen=True)
class ImageSet:
    """The benchmark's rows: originals first, then copies.

    Attributes:
        frame: id, path (absolute), label, split, true_label, origin (row position of
            the original a row comes from; its own for an original), is_copy,
            relabelled, ops, params.
        manifest: the manifest file written for it.
        classes: class names.
    """

    frame: pd.DataFrame
    manifest: Path
    classes: list[str]


def _open(source: Path | URL | Blob | None) -> Image.Image:
    """An image, decoded, in the mode its copies are made in: greyscale for greyscale
    images (Fashion-MNIST), RGB for the rest."""
    if source is None:
        raise NoisyCleanError("an original image has no file")
    fh = io.BytesIO(read_source(source)) if isinstance(source, URL | Blob) else source
    with Image.open(fh) as im:
        im.load()
        return im.convert("L" if im.mode in _GREY_MODES else "RGB")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``path`` (atomically) unless it already holds ``data``: an unchanged file
    keeps its mtime, so its cached features stay valid."""
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _file_stem(row_id: str, position: int) -> str:
    """A file name for a row: its id where that is a safe name, else its position."""
    return row_id if _SAFE_NAME.fullmatch(row_id) else f"row{position}"


def clean_labels(manifest: Manifest) -> pd.Series:
    """The labels taken as clean: ``true_label`` where every row has one, else ``label``."""
    frame = manifest.frame
    if "true_label" in frame:
        true = frame["true_label"]
        if true.notna().all() and (true.astype(str) != "").all():
            return true.astype(str)
    return frame["label"].astype(str)


def build_set(
    manifest: Manifest,
    rows: int | None,
    copies: float,
    seed: int,
    work: Path,
    *,
    scale: int = 1,
    ops: Sequence[str] = OPS,
) -> ImageSet:
    """The originals and their copies (written to ``work``; a file already holding the
    same bytes is left as it is, so its cached features are kept).

    ``rows`` usable rows of ``manifest`` (all of them when None) are the originals.
    With ``scale`` > 1 they are first enlarged that many times (bicubic, written to
    ``work/originals``) and both they and their copies are the enlarged images; so are
    originals that are not local files (objects in a store, embedded images).
    """
    frame = manifest.frame
    labels = clean_labels(manifest)
    classes = sorted(labels.unique())
    if len(classes) < 2:
        raise NoisyCleanError("the duplicates benchmark needs at least two classes")
    pool = np.flatnonzero(manifest.ok_mask)
    if len(pool) < 2:
        raise NoisyCleanError("the duplicates benchmark needs at least two usable images")
    rng = np.random.default_rng(seed)
    n_take = len(pool) if rows is None else min(rows, len(pool))
    take = np.sort(pool[rng.choice(len(pool), size=n_take, replace=False)])
    orig = pd.DataFrame(
        {
            "id": frame["id"].to_numpy(dtype=object)[take],
            "label": labels.to_numpy(dtype=object)[take],
        }
    )
    sources = manifest.sources
    paths = []
    big = work / "originals"
    for pos, row_id in zip(take.tolist(), orig["id"], strict=True):
        src = sources[pos]
        if isinstance(src, Path) and scale <= 1:
            paths.append(str(src.resolve()))
            continue
        big.mkdir(parents=True, exist_ok=True)
        im = _open(src)
        if scale > 1:
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.BICUBIC)
        path = big / f"{_file_stem(str(row_id), pos)}.png"
        _write_if_changed(path, _png(im))
        paths.append(str(path.resolve()))
    orig["path"] = paths
    orig = orig[["id", "path", "label"]]
    n = len(orig)

    n_fam = max(round(copies * n), 1)
    fam = np.sort(rng.choice(n, size=n_fam, replace=False))
    twice = rng.random(n_fam) < TWO_COPIES
    origin = np.r_[fam, fam[twice]]
    copy_no = np.r_[np.zeros(n_fam, dtype=int), np.ones(int(twice.sum()), dtype=int)]
    m = len(origin)
    relabel = np.zeros(m, dtype=bool)
    relabel[rng.choice(m, size=round(RELABEL * m), replace=False)] = True
    single = np.flatnonzero(~np.isin(origin, fam[twice]))
    test = np.zeros(m, dtype=bool)
    test[rng.choice(single, size=round(TEST_COPIES * len(single)), replace=False)] = True
    shift = rng.integers(1, len(classes), size=m)

    copy_dir = work / "copies"
    copy_dir.mkdir(parents=True, exist_ok=True)
    orig_ids = [str(v) for v in orig["id"]]
    orig_paths = [str(v) for v in orig["path"]]
    orig_labels = [str(v) for v in orig["label"]]
    records = []
    for j in range(m):
        o = int(origin[j])
        cid = f"copy-{orig_ids[o]}-{copy_no[j]}"
        crng = np.random.default_rng([seed, o, int(copy_no[j])])
        data, ext, params = make_copy(_open(Path(orig_paths[o])), crng, ops)
        path = copy_dir / f"{_file_stem(cid, n + j)}{ext}"
        _write_if_changed(path, data)
        true = orig_labels[o]
        label = classes[(classes.index(true) + int(shift[j])) % len(classes)]
        records.append(
            {
                "id": cid,
                "path": str(path.resolve()),
                "label": label if relabel[j] else true,
                "split": "test" if test[j] else "train",
                "true_label": true,
                "origin": o,
                "is_copy": True,
                "relabelled": bool(relabel[j]),
                "ops": params["ops"],
                "params": json.dumps(params),
            }
        )
    orig_rows = orig.assign(
        split="train",
        true_label=orig["label"],
        origin=np.arange(n),
        is_copy=False,
        relabelled=False,
        ops="",
        params="",
    )
    out = pd.concat([orig_rows, pd.DataFrame(records)], ignore_index=True)
    manifest_path = work / "manifest.csv"
    text = out[["id", "path", "label", "split", "true_label"]].to_csv(index=False)
    if not manifest_path.exists() or manifest_path.read_text() != text:
        write_text(manifest_path, text)
    return ImageSet(frame=out, manifest=manifest_path, classes=classes)


def content_keys(paths: Sequence[str]) -> np.ndarray:
    """(N, 2) uint64: a 128-bit BLAKE2b hash of each file's bytes."""
    out = np.zeros((len(paths), 2), dtype=np.uint64)
    for i, p in enumerate(paths):
        out[i] = np.frombuffer(
            hashlib.blake2b(Path(p).read_bytes(), digest_size=16).digest(), "<u8"
        )
    return out


# ---------------------------------------------------------------- search


def search(
    x: np.ndarray, usable: np.ndarray, is_test: np.ndarray, k: int, seed: int, cache: Path
) -> tuple[np.ndarray, np.ndarray, float]:
    """Phase 1's search in row positions: (N, k) neighbours, similarities, seconds."""
    stamp = np.array([len(x), k, seed, float(np.abs(x).sum(dtype=np.float64))])
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["stamp"], stamp):
            return z["nb"], z["sims"], float(z["seconds"])
    t = time.monotonic()
    n = len(x)
    nb = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    train_idx = np.flatnonzero(usable & ~is_test)
    test_idx = np.flatnonzero(usable & is_test)
    pool = knn.Rows(x, train_idx)
    s, i, _ = knn.search_with_info(pool, pool, k=k, exclude_self=True, seed=seed)
    nb[train_idx], sims[train_idx] = pool_to_rows(i, train_idx), s
    if len(test_idx):
        s, i = knn.search(pool, knn.Rows(x, test_idx), k=k, seed=seed)
        nb[test_idx], sims[test_idx] = pool_to_rows(i, train_idx), s
    seconds = time.monotonic() - t
    np.savez(cache, nb=nb, sims=sims, stamp=stamp, seconds=seconds)
    return nb, sims, seconds


def thumbnails(paths: Sequence[str], usable: np.ndarray, cache: Path) -> np.ndarray:
    """(N, SIDE, SIDE) uint8 pixel-check thumbnails of every usable row (zeros for the
    rest), read as the pipeline reads them and cached in ``cache``."""
    stamp = np.frombuffer(
        hashlib.blake2b("\n".join([*paths, SETTINGS]).encode(), digest_size=16).digest(),
        "<u8",
    )
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["stamp"], stamp):
            return np.asarray(z["thumbs"])
    out = np.zeros((len(paths), SIDE, SIDE), dtype=np.uint8)
    for i in np.flatnonzero(usable).tolist():
        try:
            out[i] = thumbnail(load_image(paths[i], side=SIDE))
        except UnreadableImageError:
            continue
    np.savez(cache, thumbs=out, stamp=stamp)
    return out


def cached_matches(
    nb: np.ndarray, sims: np.ndarray, usable: np.ndarray, thumbs: np.ndarray, cache: Path
) -> tuple[np.ndarray, int]:
    """``pixel_matches`` of the listed pairs at the default candidate cosine (cached),
    and how many distinct pairs were checked."""
    stamp = np.frombuffer(
        hashlib.blake2b(
            nb.tobytes()
            + sims.tobytes()
            + thumbs.tobytes()
            + f"{CANDIDATE_SIMILARITY} {SETTINGS}".encode(),
            digest_size=16,
        ).digest(),
        "<u8",
    )
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["stamp"], stamp):
            return np.asarray(z["matches"]), int(z["checked"])
    rows = np.flatnonzero(usable)
    matches = pixel_matches(nb, sims, usable, rows, thumbs[rows])
    q, slot = np.nonzero(np.isfinite(matches))
    other = nb[q, slot]
    checked = len(np.unique(np.minimum(q, other) * len(nb) + np.maximum(q, other)))
    np.savez(cache, matches=matches, checked=checked, stamp=stamp)
    return matches, checked


def pair_values(nb: np.ndarray, values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) each listed pair's entry of an (N, k) array of per-listing values (the first
    finite one of its listings), NaN where neither listing has one."""
    q, slot = np.nonzero(np.isfinite(values) & (nb >= 0))
    other = nb[q, slot]
    key = np.minimum(q, other) * len(nb) + np.maximum(q, other)
    key, first = np.unique(key, return_index=True)
    vals = values[q, slot][first]
    want = np.minimum(a, b) * len(nb) + np.maximum(a, b)
    at = np.clip(np.searchsorted(key, want), 0, max(len(key) - 1, 0))
    out = np.full(len(a), np.nan, dtype=np.float32)
    if len(key):
        hit = key[at] == want
        out[hit] = vals[at[hit]]
    return out


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Truth:
    origin: np.ndarray
    is_copy: np.ndarray
    relabelled: np.ndarray
    is_test: np.ndarray
    labels: np.ndarray
    ops: np.ndarray

    @property
    def true_pairs(self) -> int:
        copied = np.unique(self.origin[self.is_copy])
        return c2(np.bincount(self.origin, minlength=len(self.origin))[copied])


def _pairs_within(group: np.ndarray, key: np.ndarray, rows: np.ndarray) -> int:
    """Pairs of ``rows`` in one group with equal ``key``."""
    if len(rows) == 0:
        return 0
    both = group[rows] * (int(key.max()) + 1) + key[rows]
    return c2(np.unique(both, return_counts=True)[1])


def group_pairs(d: Duplicates) -> np.ndarray | None:
    """(P, 2) every pair of rows in one group, or None past ``PAIR_CAP`` pairs."""
    size = np.repeat(d.size, d.size)
    start = np.repeat(np.cumsum(d.size) - d.size, d.size)
    pos = np.arange(len(d.members))
    counts = start + size - pos - 1
    total = int(counts.sum())
    if total > PAIR_CAP:
        return None
    left = np.repeat(pos, counts)
    right = left + 1 + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([d.members[left], d.members[right]], axis=1)


def _cos(unit: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of unit rows a and b, pair by pair, in chunks."""
    out = np.empty(len(a), dtype=np.float32)
    for s in range(0, len(a), 65_536):
        e = s + 65_536
        out[s:e] = np.einsum("nd,nd->n", unit[a[s:e]], unit[b[s:e]])
    return out


NaturalRule = Callable[[np.ndarray, np.ndarray], np.ndarray | None]


def cosine_rule(unit: np.ndarray, cut: float) -> NaturalRule:
    """Rows a and b are near-duplicates when their cosine is at least ``cut``."""
    return lambda a, b: _cos(unit, a, b) >= cut


def pixel_rule(unit: np.ndarray, thumbs: np.ndarray, threshold: float) -> NaturalRule:
    """noisyclean's rule: cosine at least ``CANDIDATE_SIMILARITY`` and pixel match at least
    ``threshold`` (None past ``NATURAL_CAP`` pairs to check)."""

    def rule(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        out = np.zeros(len(a), dtype=bool)
        near = np.flatnonzero(_cos(unit, a, b) >= CANDIDATE_SIMILARITY)
        if len(near) > NATURAL_CAP:
            return None
        if len(near):
            out[near] = match(thumbs[a[near]], thumbs[b[near]]) >= threshold
        return out

    return rule


def score_pairs(
    pairs: np.ndarray,
    truth: Truth,
    unit: np.ndarray,
    cut: float,
    natural: NaturalRule | None = None,
) -> dict[str, Any]:
    """Pair precision and recall of (P, 2) predicted row pairs, and the conflict recall of
    flagging both rows of every pair with two labels.

    A pair with a copy in it is right when both rows come from one original, not counted
    when the two originals are near-duplicates themselves by the method's own rule
    (``natural``; default: at least ``cut`` cosine-similar), wrong otherwise (precision
    None when the rule can't tell).
    """
    a, b = pairs[:, 0], pairs[:, 1]
    with_copy = truth.is_copy[a] | truth.is_copy[b]
    oa, ob = truth.origin[a], truth.origin[b]
    same = oa == ob
    other = np.flatnonzero(with_copy & ~same)
    rule = natural or cosine_rule(unit, cut)
    explained = rule(oa[other], ob[other])
    tp = int((with_copy & same).sum())
    n_natural = None if explained is None else int(explained.sum())
    fp = None if n_natural is None else len(other) - n_natural
    conflict = np.zeros(len(truth.origin), dtype=bool)
    differ = truth.labels[a] != truth.labels[b]
    conflict[a[differ]] = True
    conflict[b[differ]] = True
    copies = np.flatnonzero(truth.is_copy)
    relab = copies[truth.relabelled[copies]]
    both_orig = ~with_copy
    return {
        "pairs_with_copy": int(with_copy.sum()),
        "true_positive": tp,
        "false_positive": fp,
        "natural_explained": n_natural,
        "precision": None if fp is None else round(tp / max(tp + fp, 1), 4),
        "precision_strict": round(tp / max(int(with_copy.sum()), 1), 4),
        "recall": round(tp / max(truth.true_pairs, 1), 4),
        "conflict_recall": round(float(conflict[relab].mean()), 4) if len(relab) else None,
        "conflict_rows": int(conflict.sum()),
        "natural_pairs": int(both_orig.sum()),
        "natural_conflict_pairs": int((both_orig & differ).sum()),
    }


def score_groups(
    d: Duplicates, truth: Truth, unit: np.ndarray, natural: NaturalRule | None = None
) -> dict[str, Any]:
    """``score_pairs`` on every pair inside a group (precision None past ``PAIR_CAP``
    pairs), and the kinds against the truth. ``natural``: the rule that made ``d``
    (default: cosine at least ``d.threshold``)."""
    n = len(truth.origin)
    rows = np.flatnonzero(d.group >= 0)
    orig_rows = rows[~truth.is_copy[rows]]
    pairs = group_pairs(d)
    out: dict[str, Any]
    if pairs is not None:
        out = score_pairs(pairs, truth, unit, d.threshold, natural)
    else:  # counted without listing the pairs; nothing is known to be natural
        total = c2(np.bincount(d.group[rows])) - c2(np.bincount(d.group[orig_rows]))
        tp = _pairs_within(d.group, truth.origin, rows)  # an origin has one original row
        out = {
            "pairs_with_copy": total,
            "true_positive": tp,
            "false_positive": None,
            "natural_explained": None,
            "precision": None,
            "precision_strict": round(tp / max(total, 1), 4),
            "recall": round(tp / max(truth.true_pairs, 1), 4),
            "natural_pairs": c2(np.bincount(d.group[orig_rows])),
        }
    copies = np.flatnonzero(truth.is_copy)
    found = (d.group[copies] >= 0) & (d.group[copies] == d.group[truth.origin[copies]])
    by_ops = {
        op: round(float(found[truth.ops[copies] == op].mean()), 4)
        for op in sorted(set(truth.ops[copies]))
    }
    relab = copies[truth.relabelled[copies]]
    test_copies = copies[truth.is_test[copies]]
    in_conflict = d.in_conflict
    fam_relab = np.zeros(n, dtype=bool)
    fam_relab[truth.origin[relab]] = True
    flagged = np.flatnonzero(in_conflict)
    group_has_copy = np.zeros(d.n_groups, dtype=bool)
    group_has_copy[d.group[copies][d.group[copies] >= 0]] = True
    flagged_true = fam_relab[truth.origin[flagged]]
    flagged_natural = ~group_has_copy[d.group[flagged]]
    copy_group = d.group[test_copies]
    leak_found = np.zeros(len(test_copies), dtype=bool)
    leak_found[copy_group >= 0] = d.leak[copy_group[copy_group >= 0]]
    out.update(
        {
            "threshold": d.threshold if d.match_threshold is None else d.match_threshold,
            "groups": d.n_groups,
            "largest_group": int(d.size.max()) if d.n_groups else 0,
            "copy_recall_by_ops": by_ops,
            "conflict_recall": round(float(in_conflict[relab].mean()), 4) if len(relab) else None,
            "conflict_rows": len(flagged),
            "conflict_rows_injected": int(flagged_true.sum()),
            "conflict_rows_natural": int(flagged_natural.sum()),
            "conflict_rows_spurious": int((~flagged_true & ~flagged_natural).sum()),
            "leak_recall": round(float(leak_found.mean()), 4) if len(test_copies) else None,
            "natural_groups": int((~group_has_copy).sum()),
            "natural_conflict_groups": int((~group_has_copy & d.conflict).sum()),
            "natural_exact_groups": int((~group_has_copy & d.exact).sum()),
        }
    )
    return out


def run_datalab(
    x: np.ndarray, labels: np.ndarray, usable: np.ndarray, cache: Path
) -> dict[str, Any]:
    """cleanlab Datalab's ``near_duplicate`` issue on the same features (cached).

    Raises:
        ImportError: cleanlab or its ``datalab`` extra is not installed.
    """
    stamp = np.array([len(x), float(np.abs(x).sum(dtype=np.float64))])
    if cache.exists():
        z = np.load(cache)
        if np.array_equal(z["stamp"], stamp):
            return {k: z[k] for k in z.files}
    import cleanlab
    from cleanlab import Datalab

    rows = np.flatnonzero(usable)
    t = time.monotonic()
    lab = Datalab(data={"label": labels[rows]}, label_name="label", verbosity=0)
    lab.find_issues(features=x[rows], issue_types={"near_duplicate": {}})
    seconds = time.monotonic() - t
    info = lab.get_info("near_duplicate")
    sets = info["near_duplicate_sets"]
    lengths = np.array([len(s) for s in sets], dtype=np.int64)
    other = np.concatenate([np.asarray(s, dtype=np.int64) for s in sets] or [np.zeros(0, int)])
    first = np.repeat(np.arange(len(sets)), lengths)
    a, b = rows[np.minimum(first, other)], rows[np.maximum(first, other)]
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.zeros((0, 2), int)
    out = {
        "pairs": pairs,
        "radius": np.float64(info["threshold"] * info["median_distance_to_nearest_neighbor"]),
        "threshold": np.float64(info["threshold"]),
        "median": np.float64(info["median_distance_to_nearest_neighbor"]),
        "metric": np.array(str(info["metric"])),
        "k": np.int64(info["k"]),
        "seconds": np.float64(seconds),
        "version": np.array(cleanlab.__version__),
        "flagged": np.int64(lab.get_issues("near_duplicate")["is_near_duplicate_issue"].sum()),
        "stamp": stamp,
    }
    np.savez(cache, **out)  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------- pictures


def pixel_difference(paths: list[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference in [0, 1] of the greyscale pixels of image pairs (both
    sized as ``a``'s image)."""
    cache: dict[int, np.ndarray] = {}

    def pixels(row: int, size: tuple[int, int] | None = None) -> np.ndarray:
        if row not in cache or size is not None:
            with Image.open(paths[row]) as im:
                g = im.convert("L")
                if size is not None and g.size != size:
                    g = g.resize(size, Image.Resampling.BILINEAR)
                out = np.asarray(g, dtype=np.float32) / 255.0
            if size is not None:
                return out
            cache[row] = out
        return cache[row]

    out = np.empty(len(a), dtype=np.float32)
    for n, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        x = pixels(i)
        y = pixels(j)
        if y.shape != x.shape:
            y = pixels(j, (x.shape[1], x.shape[0]))
        out[n] = float(np.abs(x - y).mean())
    return out


def listed_pairs(
    nb: np.ndarray, sims: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered listed pairs between rows in ``keep``, highest similarity first."""
    rows, cols = np.nonzero(nb >= 0)
    a, b, s = rows, nb[rows, cols], sims[rows, cols]
    ok = keep[a] & keep[b] & (a != b)
    a, b, s = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok]), s[ok]
    key = a * len(nb) + b
    _, first = np.unique(key, return_index=True)
    a, b, s = a[first], b[first], s[first]
    order = np.argsort(-s, kind="stable")
    return a[order], b[order], s[order]


def contact_sheet(
    sections: list[tuple[str, list[tuple[int, int, str]]]],
    paths: list[str],
    labels: list[str],
    path: Path,
) -> None:
    """Pairs of images side by side with a caption, 4 pairs a line, by section."""
    side, cols, cap, pad, title = 84, 4, 30, 8, 24
    cell_w, cell_h = 2 * side + 3 * pad, side + cap + pad
    height = sum(title + -(-len(p) // cols) * cell_h for _, p in sections) + pad
    sheet = Image.new("RGB", (cols * cell_w, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for name, pairs in sections:
        draw.text((pad, y), name, fill="black")
        y += title
        for n, (a, b, caption) in enumerate(pairs):
            x0, y0 = (n % cols) * cell_w, y + (n // cols) * cell_h
            for m, row in enumerate((a, b)):
                with Image.open(paths[row]) as im:
                    thumb = im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
                sheet.paste(thumb, (x0 + pad + m * (side + pad), y0))
            colour = "red" if labels[a] != labels[b] else "black"
            draw.text((x0 + pad, y0 + side + 2), caption, fill=colour)
        y += -(-len(pairs) // cols) * cell_h
    sheet.save(path)


# ---------------------------------------------------------------- the run


def choose(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """The best threshold of the sweep: highest F1 among those that meet both targets
    (else among all), ties to the higher threshold."""

    def f1(r: dict[str, Any]) -> float:
        p, q = r["precision"], r["recall"]
        return 2 * p * q / (p + q) if p + q else 0.0

    known = [r for r in sweep if r["precision"] is not None]
    meets = [
        r for r in known if r["recall"] >= TARGET_RECALL and r["precision"] >= TARGET_PRECISION
    ]
    pool = meets or known
    return max(pool, key=lambda r: (round(f1(r), 4), r["threshold"]))


def display_name(location: Location) -> str:
    """A manifest's name in the report: relative to the working folder when inside it."""
    if isinstance(location, Path):
        try:
            return str(location.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(location)
    return str(location)


@dataclass(frozen=True)
class DuplicatesBenchResult:
    """What :func:`run_duplicates_bench` wrote, and its headline figures.

    Attributes:
        results: what ``results.json`` holds.
        markdown: ``results.md``.
        out_dir: the folder written to.
        threshold: noisyclean's default pixel-match threshold (``MATCH_THRESHOLD``).
        precision: pair precision at it, natural pairs left out (None: past ``PAIR_CAP``).
        precision_strict: pair precision counting every pair with a copy in it.
        recall: pair recall at it.
        conflict_recall: relabelled copies found in a ``conflict`` group.
        best_threshold: the best threshold of the sweep (``choose``), and
        best_precision, best_recall: its figures.
        datalab: ``ran``, ``not installed`` or ``skipped``.
        datalab_precision, datalab_recall, datalab_conflict_recall: Datalab's
            ``near_duplicate`` issue's figures, None unless it ran.
        natural_pairs: pairs of two originals in one group at the default threshold.
        headline: a few lines to print.
    """

    results: dict[str, Any]
    markdown: str
    out_dir: Path
    threshold: float
    precision: float | None
    precision_strict: float
    recall: float
    conflict_recall: float | None
    best_threshold: float
    best_precision: float | None
    best_recall: float
    datalab: str
    datalab_precision: float | None
    datalab_recall: float | None
    datalab_conflict_recall: float | None
    natural_pairs: int
    headline: tuple[str, ...]


def run_duplicates_bench(
    manifest: Manifest,
    output: Path,
    *,
    features: FeatureConfig,
    rows: int | None = None,
    copies: float = 0.1,
    scale: int = 1,
    seed: int = 0,
    k: int = 10,
    datalab: bool = True,
    ops: Sequence[str] = OPS,
    work: Path | None = None,
    log: Log | None = None,
    feature_progress: FeatureProgress | None = None,
) -> DuplicatesBenchResult:
    """Plant near-copies, find them with ``find_duplicates`` (and Datalab), and write
    ``results.json``, ``results.md``, ``natural.png`` and ``copies.png`` to ``output``.

    Args:
        manifest: labelled images; ``true_label`` (where every row has one), else
            ``label``, is taken as clean.
        output: the folder written to.
        features: the backbone and feature cache.
        rows: originals drawn (seeded) from the usable rows; None: all of them.
        copies: share of the originals copied (a tenth of those twice).
        scale: enlarge the originals this many times (bicubic) before copying them.
        seed: seeds the draw, the perturbations, the relabelling and the search.
        k: neighbours searched per row.
        datalab: also run Datalab's ``near_duplicate`` issue (when installed).
        ops: the perturbations drawn from (``OPS``); none: each copy is the original
            saved again as PNG.
        work: where the copies, the search and the Datalab run are kept, deterministic
            for a seed (default ``output / "work"``).
        log: called with a line of progress now and then.
        feature_progress: called as features are computed.

    Raises:
        NoisyCleanError: too few usable images or classes, or unreadable images.
        ValueError: a bad option.
    """
    if rows is not None and rows < 2:
        raise ValueError(f"rows must be at least 2, got {rows}")
    if not 0.0 < copies <= 1.0:
        raise ValueError(f"copies must be in (0, 1], got {copies}")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {unknown}; choose from {OPS}")
    say: Log = log or (lambda _msg: None)
    work = output / "work" if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    shown = f"{rows} originals" if rows is not None else "all usable images as originals"
    say(f"set: {shown}, copies of {copies:.0%}, in {work}")
    data = build_set(manifest, rows, copies, seed, work, scale=scale, ops=ops)
    f = data.frame
    t = time.monotonic()
    feats = extract_features(load_manifest(data.manifest), features, progress=feature_progress)
    say(f"  features: {feats.computed} computed in {time.monotonic() - t:.0f} s")
    x, usable = feats.values, feats.status == "ok"
    if usable.sum() < 2:
        raise NoisyCleanError("fewer than two of the benchmark's images could be read")
    labels = pd.Categorical(f["label"], categories=data.classes).codes.astype(np.int64)
    is_test = (f["split"] == "test").to_numpy()
    is_copy = f["is_copy"].to_numpy(dtype=bool)
    truth = Truth(
        origin=f["origin"].to_numpy(dtype=np.int64),
        is_copy=is_copy,
        relabelled=f["relabelled"].to_numpy(dtype=bool),
        is_test=is_test,
        labels=labels,
        ops=f["ops"].to_numpy(dtype=object),
    )
    nb, sims, search_s = search(x, usable, is_test, k, seed, work / "search.npz")
    ids = [str(v) for v in f["id"]]
    names = [str(v) for v in f["label"]]
    paths = [str(v) for v in f["path"]]
    keys = content_keys(paths)
    originals = usable & ~is_copy
    unit = knn.normalize(x)
    thumbs = thumbnails(paths, usable, work / "thumbnails.npz")
    t0 = time.monotonic()
    matches, checked = cached_matches(nb, sims, usable, thumbs, work / "matches.npz")
    match_s = time.monotonic() - t0
    say(f"  pixel check: {checked} pairs in {match_s:.0f} s")

    def group(threshold: float, keep: np.ndarray, **kw: Any) -> Duplicates:
        return find_duplicates(
            nb,
            sims,
            labels,
            is_test,
            keep,
            matches=matches,
            match_threshold=threshold,
            content_keys=keys,
            **kw,
        )

    sweep = [
        score_groups(group(t, usable), truth, unit, pixel_rule(unit, thumbs, t)) for t in SWEEP
    ]
    best = choose(sweep)
    t0 = time.process_time()
    d = group(MATCH_THRESHOLD, usable)
    group_s = time.process_time() - t0
    t0 = time.process_time()
    group(MATCH_THRESHOLD, usable, features=x)
    group_features_s = time.process_time() - t0
    at_default = score_groups(d, truth, unit, pixel_rule(unit, thumbs, MATCH_THRESHOLD))
    cosine_only = score_groups(
        find_duplicates(
            nb, sims, labels, is_test, usable, threshold=COSINE_THRESHOLD, content_keys=keys
        ),
        truth,
        unit,
    )

    # Similarity and pixel match of each copy to its original, and of each original to
    # its nearest original.
    copied = np.flatnonzero(is_copy & usable)
    copy_cos = np.einsum("nd,nd->n", unit[copied], unit[truth.origin[copied]])
    copy_match = match(thumbs[copied], thumbs[truth.origin[copied]])
    a, b, s = listed_pairs(nb, sims, originals)
    nearest = np.full(len(f), -np.inf, dtype=np.float32)
    np.maximum.at(nearest, a, s)
    np.maximum.at(nearest, b, s)
    nearest = nearest[originals & np.isfinite(nearest)]
    qs = [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999, 1.0]

    def quantiles(v: np.ndarray) -> dict[str, float]:
        return {f"q{q:g}": round(float(np.quantile(v, q)), 4) for q in qs} if len(v) else {}

    ops_of_copy = truth.ops[copied]
    sim_stats = {
        "copy_to_original": quantiles(copy_cos),
        "copy_to_original_by_ops": {
            op: quantiles(copy_cos[ops_of_copy == op]) for op in sorted(set(ops_of_copy))
        },
        "original_to_nearest_original": quantiles(nearest),
    }
    match_stats = {
        "copy_to_original": quantiles(copy_match),
        "copy_to_original_by_ops": {
            op: quantiles(copy_match[ops_of_copy == op]) for op in sorted(set(ops_of_copy))
        },
    }
    # Natural pairs: listed pairs of originals that were checked, by pixel match; how
    # many look the same pixel for pixel (a proxy for true duplicates).
    pm = pair_values(nb, matches, a, b)
    checked_nat = np.flatnonzero(np.isfinite(pm))
    a, b, s, pm = a[checked_nat], b[checked_nat], s[checked_nat], pm[checked_nat]
    order = np.lexsort((-s, -pm))
    a, b, s, pm = a[order], b[order], s[order], pm[order]
    high = pm >= min(SWEEP)
    mad = pixel_difference(paths, a[high], b[high])
    for m in sweep:
        above = pm[high] >= m["threshold"]
        m["natural_listed_pairs"] = int(above.sum())
        m["natural_listed_pixel_same"] = int((above & (mad <= PIXEL_SAME)).sum())
    top_natural = [
        {
            "a": ids[i],
            "b": ids[j],
            "match": round(float(w), 5),
            "similarity": round(float(v), 5),
            "labels": [names[i], names[j]],
            "same_bytes": bool((keys[i] == keys[j]).all()),
            "pixel_difference": round(float(e), 4),
        }
        for i, j, w, v, e in zip(a[:30], b[:30], pm[:30], s[:30], mad[:30], strict=False)
    ]

    # Datalab.
    dl: dict[str, Any] | None = None
    dl_status = "skipped"
    if datalab:
        try:
            z = run_datalab(x, labels, usable, work / "datalab.npz")
        except ImportError as e:
            dl_status = "not installed"
            say(f"  Datalab not run: {e}")
        else:
            dl_status = "ran"
            dl = score_pairs(z["pairs"], truth, unit, 1.0 - float(z["radius"]))
            dl.update(
                cleanlab=str(z["version"]),
                metric=str(z["metric"]),
                k=int(z["k"]),
                relative_threshold=float(z["threshold"]),
                median_nn_distance=round(float(z["median"]), 5),
                cosine_threshold=round(1.0 - float(z["radius"]), 5),
                rows_flagged=int(z["flagged"]),
                seconds=round(float(z["seconds"]), 2),
            )

    # Pictures.
    rng = np.random.default_rng(seed)
    t = MATCH_THRESHOLD
    border = np.flatnonzero((pm >= t) & (pm < t + 0.01))
    below = np.flatnonzero((pm >= t - 0.02) & (pm < t))

    def caption(i: int, j: int, w: float, v: float) -> str:
        return f"{w:.3f} ({v:.3f})\n{names[i][:12]} / {names[j][:12]}"

    def sample(idx: np.ndarray, n: int) -> list[tuple[int, int, str]]:
        pick = np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)) if len(idx) else idx
        return [
            (int(a[i]), int(b[i]), caption(int(a[i]), int(b[i]), float(pm[i]), float(s[i])))
            for i in pick
        ]

    contact_sheet(
        [
            (
                "Best-matching pairs of original images: match (cosine); red: two labels",
                sample(np.arange(min(16, len(pm))), 16),
            ),
            (f"Original pairs just above the threshold, [{t}, {t + 0.01:.2f})", sample(border, 16)),
            (f"Original pairs just below it, [{t - 0.02:.2f}, {t})", sample(below, 8)),
        ],
        paths,
        names,
        output / "natural.png",
    )
    hardest = np.argsort(copy_match, kind="stable")[:24]
    contact_sheet(
        [
            (
                "Copies that match their originals least (original left; match, cosine, ops)",
                [
                    (
                        int(truth.origin[copied[i]]),
                        int(copied[i]),
                        f"{copy_match[i]:.3f}, {copy_cos[i]:.3f}\n{truth.ops[copied[i]]}",
                    )
                    for i in hardest
                ],
            )
        ],
        paths,
        names,
        output / "copies.png",
    )

    results = {
        "set": {
            "manifest": display_name(manifest.source),
            "originals": int((~is_copy).sum()),
            "copies": int(is_copy.sum()),
            "relabelled_copies": int(truth.relabelled.sum()),
            "test_copies": int((is_copy & is_test).sum()),
            "usable": int(usable.sum()),
            "true_pairs": truth.true_pairs,
            "seed": seed,
            "perturbations": {
                "resize": list(RESIZE),
                "jpeg_quality": list(QUALITY),
                "crop_max_per_side": CROP_MAX,
                "combination": (
                    "each op with probability 1/2, at least one; "
                    + ", ".join(op for op in OPS if op in ops)
                    if ops
                    else "none: each copy is the original saved again as PNG"
                ),
            },
        },
        "features": {"backbone": features.backbone, "image_size": feats.image_size},
        "scale": scale,
        "search": {"k": k, "seconds": round(search_s, 2)},
        "default_threshold": MATCH_THRESHOLD,
        "candidates": CANDIDATE_SIMILARITY,
        "pixel_check": {"pairs": checked, "seconds": round(match_s, 2)},
        "at_default": at_default,
        "cosine_only": {**cosine_only, "cosine": COSINE_THRESHOLD},
        "best": best,
        "sweep": sweep,
        "datalab": dl,
        "datalab_status": dl_status,
        "similarity": sim_stats,
        "match": match_stats,
        "top_natural_pairs": top_natural,
        "timing": {
            "find_duplicates_cpu_s": round(group_s, 4),
            "find_duplicates_with_features_cpu_s": round(group_features_s, 4),
            "rows": len(f),
        },
    }
    markdown = report(results)
    write_text(output / "results.json", json.dumps(results, indent=1) + "\n")
    write_text(output / "results.md", markdown)
    lines = headline(results)
    return DuplicatesBenchResult(
        results=results,
        markdown=markdown,
        out_dir=output,
        threshold=MATCH_THRESHOLD,
        precision=at_default["precision"],
        precision_strict=at_default["precision_strict"],
        recall=at_default["recall"],
        conflict_recall=at_default["conflict_recall"],
        best_threshold=best["threshold"],
        best_precision=best["precision"],
        best_recall=best["recall"],
        datalab=dl_status,
        datalab_precision=dl["precision"] if dl else None,
        datalab_recall=dl["recall"] if dl else None,
        datalab_conflict_recall=dl["conflict_recall"] if dl else None,
        natural_pairs=at_default["natural_pairs"],
        headline=tuple(lines),
    )


# ---------------------------------------------------------------- the report


def fmt(v: float | None) -> str:
    """A figure for the tables: 4 decimals, or a dash where unknown."""
    return "—" if v is None else f"{v:.4f}"


def headline(r: dict[str, Any]) -> list[str]:
    """A few lines for a terminal: the default threshold, the best one, Datalab."""
    s, d, b = r["set"], r["at_default"], r["best"]
    out = [
        f"{s['originals']} originals, {s['copies']} near-copies ({s['relabelled_copies']} "
        f"relabelled), {s['true_pairs']} true pairs",
        f"noisyclean at match {r['default_threshold']}: pair precision {fmt(d['precision'])} "
        f"(strict {fmt(d['precision_strict'])}), recall {fmt(d['recall'])}, conflict recall "
        f"{fmt(d['conflict_recall'])}; {d['natural_pairs']} natural pairs",
        f"best threshold of the sweep: {b['threshold']:.3f} (precision {fmt(b['precision'])}, "
        f"recall {fmt(b['recall'])}, conflict recall {fmt(b['conflict_recall'])})",
    ]
    c = r.get("cosine_only")
    if c:
        out.append(
            f"cosine alone at {c['cosine']} (no pixel check): precision {fmt(c['precision'])}, "
            f"recall {fmt(c['recall'])}, conflict recall {fmt(c['conflict_recall'])}"
        )
    dl = r["datalab"]
    if dl:
        out.append(
            f"Datalab near_duplicate (cosine ≥ {dl['cosine_threshold']:.4f}): precision "
            f"{fmt(dl['precision'])}, recall {fmt(dl['recall'])}, conflict recall "
            f"{fmt(dl['conflict_recall'])}"
        )
    else:
        out.append(f"Datalab near_duplicate: {r.get('datalab_status', 'not run')}")
    return out


def report(r: dict[str, Any]) -> str:
    """results.md."""
    s = r["set"]
    lines = [
        "# Near-duplicate groups: calibration on Fashion-MNIST",
        "",
        f"{s['originals']} original images ({s['manifest']}"
        + (f", enlarged {r['scale']}× bicubic" if r["scale"] > 1 else ", 28 px as they are")
        + f"), {s['copies']} near-copies "
        f"({s['relabelled_copies']} relabelled, {s['test_copies']} in test), "
        f"{s['true_pairs']} true pairs; {r['features']['backbone']} at "
        f"{r['features']['image_size']} px; k = {r['search']['k']} "
        f"(search {r['search']['seconds']} s). Perturbations: resize "
        f"×{s['perturbations']['resize']}, "
        f"JPEG quality {s['perturbations']['jpeg_quality']}, crop ≤ "
        f"{s['perturbations']['crop_max_per_side']:.0%} per side; "
        f"{s['perturbations']['combination']}.",
        "",
        "## Methods at their defaults",
        "",
        f"noisyclean checks every listed pair at cosine ≥ {r['candidates']} by pixel match "
        f"({r['pixel_check']['pairs']} pairs, {r['pixel_check']['seconds']} s); the cosine-only "
        "row is the rule for pairs it cannot check (an image it cannot read again).",
        "",
        "| method | rule | pair precision | strict precision | pair recall "
        "| conflict recall | leak recall | natural pairs |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, m: dict[str, Any], cut: str) -> str:
        leak = m.get("leak_recall")
        return (
            f"| {name} | {cut} | {fmt(m['precision'])} | {fmt(m['precision_strict'])} "
            f"| {fmt(m['recall'])} | {fmt(m['conflict_recall'])} | {fmt(leak)} "
            f"| {m['natural_pairs']} |"
        )

    lines.append(row("noisyclean (default)", r["at_default"], f"match ≥ {r['default_threshold']}"))
    lines.append(row("noisyclean (best of sweep)", r["best"], f"match ≥ {r['best']['threshold']}"))
    c = r["cosine_only"]
    lines.append(row("noisyclean, cosine alone", c, f"cosine ≥ {c['cosine']}"))
    if r["datalab"]:
        d = r["datalab"]
        lines.append(
            row(
                f"Datalab near_duplicate (cleanlab {d['cleanlab']})",
                d,
                f"cosine ≥ {d['cosine_threshold']:.4f}",
            )
        )
    else:
        status = r.get("datalab_status", "not run")
        status = "not run" if status == "skipped" else status
        lines.append(f"| Datalab near_duplicate | {status} | — | — | — | — | — | — |")
    lines += [
        "",
        "Precision leaves out pairs whose two originals are near-duplicates themselves by "
        "the same method's rule; strict precision counts them as wrong. Leak recall: test "
        "copies in a `leak` group with their original.",
        "",
        f"## Sweep (noisyclean: pixel-match threshold, candidates at cosine ≥ {r['candidates']})",
        "",
        "Spurious conflict rows: rows in a `conflict` group with a copy in it that no "
        "relabelling explains. Natural pairs: pairs of originals in one group; listed: "
        "checked pairs of originals whose match is at or above the threshold, and "
        f"(in brackets) how many of those differ by at most {PIXEL_SAME} in mean "
        "greyscale pixel value: the same picture.",
        "",
        "| threshold | precision | recall | conflict recall | spurious conflict rows "
        "| natural pairs | natural listed pairs (same pixels) | natural conflicts "
        "| groups | largest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in r["sweep"]:
        lines.append(
            f"| {m['threshold']:.3f} | {fmt(m['precision'])} | {fmt(m['recall'])} "
            f"| {fmt(m['conflict_recall'])} | {m['conflict_rows_spurious']} | {m['natural_pairs']} "
            f"| {m['natural_listed_pairs']} ({m['natural_listed_pixel_same']}) "
            f"| {m['natural_conflict_groups']} | {m['groups']} | {m['largest_group']} |"
        )
    lines += ["", "## Copy recall by perturbation (default threshold)", ""]
    lines += [f"- {op}: {v}" for op, v in r["at_default"]["copy_recall_by_ops"].items()]
    for title, stats in (("Pixel matches", r["match"]), ("Cosine similarities", r["similarity"])):
        lines += ["", f"## {title}", ""]
        for name, q in stats.items():
            if name == "copy_to_original_by_ops":
                lines += [f"- copy to original, {op}: {qq}" for op, qq in q.items()]
            else:
                lines.append(f"- {name.replace('_', ' ')}: {q}")
    lines += ["", "## Top natural pairs (originals): match, cosine", ""]
    lines += [
        f"- {p['match']:.4f}, {p['similarity']:.4f} {p['a']} / {p['b']} "
        f"({' / '.join(p['labels'])})"
        + f", pixel difference {p['pixel_difference']}"
        + (", same bytes" if p["same_bytes"] else "")
        for p in r["top_natural_pairs"][:15]
    ]
    lines += [
        "",
        f"find_duplicates on {r['timing']['rows']} rows: {r['timing']['find_duplicates_cpu_s']} s "
        f"CPU ({r['timing']['find_duplicates_with_features_cpu_s']} s with features).",
        "",
    ]
    return "\n".join(lines)
