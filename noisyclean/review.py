"""The review page: one self-contained HTML file to decide on a run's suspects,
near-duplicate groups and outliers.

The page's markup, style and script are the package files ``review_page/page.html``,
``page.css`` and ``page.js``, inlined into the output. It has three tabs:

- **Wrong labels**: the suspects (``is_suspect``), most suspicious first (``rank``), each
  with neighbour thumbnails of its given and suggested class. Outliers are left out (a
  relabel cannot fix them: they are on their own tab); a row of a ``conflict`` duplicate
  group carries a badge naming the other labels of its copies.
- **Duplicates**: one card per group of ``duplicates.parquet``, members side by side;
  conflict groups first, then leak, exact and near, larger groups first within a kind.
  Group actions (keep one, relabel all, drop all) decide every member.
- **Outliers**: rows with ``is_outlier``, most outlying first (``outlier``); the
  suggestion is drop.

Each tab shows at most ``top`` cards (groups). Rows, groups and scores are filtered and
sorted in Arrow, so a million-row run makes Python objects only for what is shown. A run
written before duplicates and outliers were found (no ``duplicates.parquet``, no
``outlier`` columns) still renders: those tabs show none and say why.

The page works offline from a ``file://`` URL: no CDN, no server, no fetch. Thumbnails
are embedded once each as ``data:`` URIs (downscaled, WEBP or JPEG, whichever is
smaller), in one JSON map from row id to URI, so a row shown on many cards costs its
bytes once. The images are read as ``score`` read them (``noisyclean.sources``): files,
objects in a store (downloaded in threads, URLs as written, credentials never on the
page) or bytes embedded in the manifest.

Safety: the run's labels, paths and ids are data, never markup. They are embedded as
JSON inside ``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028 and
U+2029 escaped, and the page's script builds the DOM with ``createElement`` and
``textContent`` only.

Decisions (keep, relabel, drop) are one per row, whichever tab made them: a group action
or a bulk action ("accept the suggestions shown", "keep all shown", applied to the
undecided cards of the current tab and filters) expands to one decision per row, and
the page's Undo restores exactly the rows an action changed. Decisions persist in the
browser's localStorage under the run's ``run_id`` and are exported as ``decisions.csv``
(``id,decision,new_label``; one line per decided row, and ``noisyclean apply`` keeps
every row the file does not name).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from noisyclean import __version__
from noisyclean.artifacts import (
    RunConfig,
    read_duplicates,
    read_run_config,
    read_suspects,
    write_text,
)
from noisyclean.duplicates import KINDS as DUPLICATE_KINDS
from noisyclean.errors import NoisyCleanError
from noisyclean.images import UnreadableImageError, load_image
from noisyclean.manifest import row_sources
from noisyclean.sources import ImageSource

#: JPEG/WEBP quality of the thumbnails: small pages, still good enough to judge a label.
THUMB_QUALITY = 70

#: Keyboard shortcuts, as the page lists them (the page's script implements the same).
#: Deciding keys act on the current card of the Wrong labels and Outliers tabs; j/k move
#: between the cards (groups) of any tab.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("j / ↓", "next card"),
    ("k / ↑", "previous card"),
    ("a", "keep (the given label is right)"),
    ("r", "relabel to the suggested label (Wrong labels)"),
    (
        "/ or t",
        "relabel to any class: type part of its name, ↑/↓ pick, Enter relabel, Esc close"
        " (Wrong labels)",
    ),
    (
        "1–9, 0",
        "relabel to class 1–9, 10 (10 classes at most; with more, a digit starts a search)"
        " (Wrong labels)",
    ),
    ("d", "drop the row"),
    ("u", "undo: clear the card's decision"),
    ("z", "undo the last action (a decision, a group or bulk action, an import)"),
    ("?", "show or hide this list"),
)

#: Member thumbnails shown per duplicate group (group actions decide every member).
MEMBERS_SHOWN = 12


@dataclass(frozen=True)
class ReviewSummary:
    """What ``write_review`` wrote.

    Attributes:
        output: the HTML page.
        run_id: the run's id (the page's localStorage key).
        cards: suspects shown on the Wrong labels tab.
        suspects: suspects in the run, outliers left out (``cards`` is at most ``top``).
        images: distinct thumbnails embedded.
        missing_images: rows on the page whose image is missing or unreadable.
        size: the page's size in bytes.
        groups: near-duplicate groups shown on the Duplicates tab.
        duplicate_groups: groups in the run's duplicates.parquet (0 without one).
        outlier_cards: outliers shown on the Outliers tab.
        outliers: outliers in the run (0 for a run without outlier scores).
    """

    output: Path
    run_id: str
    cards: int
    suspects: int
    images: int
    missing_images: int
    size: int
    groups: int = 0
    duplicate_groups: int = 0
    outlier_cards: int = 0
    outliers: int = 0


@dataclass(frozen=True)
class _Page:
    html: str
    run_id: str
    cards: int
    suspects: int
    images: int
    missing_images: int
    groups: int
    duplicate_groups: int
    outlier_cards: int
    outliers: int


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``</script>``,
    no ``<!--``, no character that could end the element or be read as markup."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def encode_thumbnail(
    source: ImageSource | str, size: int, *, quality: int = THUMB_QUALITY
) -> str | None:
    """A ``data:`` URI of the image downscaled to fit ``size``×``size`` (never upscaled),
    as WEBP or JPEG, whichever is smaller; None if the image is missing or unreadable.

    ``source`` is whatever ``images.load_image`` reads: a file, a URL (one download,
    retried), or bytes embedded in the manifest.
    """
    try:
        # Upright RGB, transparency on white; big photos are decoded at reduced size.
        im = load_image(source, size)
    except UnreadableImageError:
        return None
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    best: tuple[int, str, bytes] | None = None
    for fmt, options in (
        ("webp", {"quality": quality, "method": 6}),
        ("jpeg", {"quality": quality, "optimize": True}),
    ):
        buf = io.BytesIO()
        try:
            im.save(buf, fmt.upper(), **options)
        except (OSError, KeyError):  # a Pillow built without WEBP
            continue
        data = buf.getvalue()
        if best is None or len(data) < best[0]:
            best = (len(data), fmt, data)
    if best is None:
        return None
    return f"data:image/{best[1]};base64,{base64.b64encode(best[2]).decode('ascii')}"


def _number(value: Any, digits: int) -> float | None:
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _ids(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(v) for v in value]


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _read_duplicates(run_dir: Path, config: RunConfig) -> pa.Table | None:
    """The run's duplicates.parquet, or None for a run written before it existed."""
    if not (run_dir / "duplicates.parquet").is_file():
        return None
    return read_duplicates(run_dir, config)


def _build(run_dir: Path, *, top: int, thumb_size: int, neighbours: int) -> _Page:
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if thumb_size < 8:
        raise ValueError(f"thumb_size must be at least 8, got {thumb_size}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be at least 0, got {neighbours}")
    config = read_run_config(run_dir)
    table = read_suspects(run_dir, config)
    duplicates = _read_duplicates(run_dir, config)
    return _page(config, table, duplicates, top=top, thumb_size=thumb_size, neighbours=neighbours)


def _flag(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    """A boolean column with nulls as false, or None where the run lacks it."""
    if name not in table.column_names:
        return None
    return pc.fill_null(table.column(name).cast(pa.bool_()), False)


def _wrong_label_cards(
    table: pa.Table, *, top: int
) -> tuple[list[dict[str, Any]], int, dict[int, list[str]]]:
    """The Wrong labels tab: suspects that are not outliers, by rank (cards, the count in
    the run, and the duplicate groups of the cards that carry a conflict badge)."""
    flagged = pc.and_(
        pc.fill_null(table.column("is_suspect"), False), pc.is_valid(table.column("rank"))
    )
    is_outlier = _flag(table, "is_outlier")
    if is_outlier is not None:  # a relabel cannot fix an outlier: it is on its own tab
        flagged = pc.and_(flagged, pc.invert(is_outlier))
    suspects = table.filter(flagged)
    order_by = pc.sort_indices(suspects, sort_keys=[("rank", "ascending")])
    wanted = [
        "id",
        "path",
        "label",
        "suggested_label",
        "rank",
        "suspicion",
        "confidence",
        "neighbour_agreement",
        "neighbours_given",
        "neighbours_suggested",
    ] + [c for c in ("conflict", "duplicate_group") if c in table.column_names]
    shown = suspects.select(wanted).take(order_by[:top]).to_pandas()
    cards = []
    badges: dict[int, list[str]] = {}
    records: list[dict[str, Any]] = shown.to_dict("records")  # type: ignore[assignment]
    for r in records:
        card = {
            "id": str(r["id"]),
            "path": str(r["path"]),
            "label": str(r["label"]),
            "suggested": _text(r["suggested_label"]),
            "rank": int(r["rank"]),
            "suspicion": _number(r["suspicion"], 4),
            "confidence": _number(r["confidence"], 4),
            "agreement": _number(r["neighbour_agreement"], 3),
            "given": _ids(r["neighbours_given"]),
            "sugg": _ids(r["neighbours_suggested"]),
        }
        conflict = r.get("conflict")
        if conflict is not None and not pd.isna(conflict) and bool(conflict):
            # The other labels of its copies, filled in from duplicates.parquet (none
            # found: the badge just says the group conflicts).
            card["conflict"] = []
            group = r.get("duplicate_group")
            if group is not None and not pd.isna(group):
                card["group"] = int(group)
                badges.setdefault(int(group), [])
        cards.append(card)
    return cards, suspects.num_rows, badges


def _outlier_cards(table: pa.Table, *, top: int) -> tuple[list[dict[str, Any]], int]:
    """The Outliers tab: rows with ``is_outlier``, most outlying first."""
    is_outlier = _flag(table, "is_outlier")
    if is_outlier is None:
        return [], 0
    rows = table.filter(is_outlier)
    columns = [
        c for c in ("id", "path", "label", "outlier", "suggestion") if c in rows.column_names
    ]
    rows = rows.select(columns)
    if "outlier" in columns:
        # Unusable rows (a null score) last: Arrow puts nulls at the end either way.
        order = pc.sort_indices(rows, sort_keys=[("outlier", "descending")])
        shown = rows.take(order[:top])
    else:
        shown = rows.slice(0, top)
    cards = []
    for r in shown.to_pylist():
        cards.append(
            {
                "id": str(r["id"]),
                "path": str(r["path"]),
                "label": str(r["label"]),
                "outlier": _number(r.get("outlier"), 3),
                "suggestion": r.get("suggestion") or "drop",
            }
        )
    return cards, rows.num_rows


def _duplicate_groups(
    duplicates: pa.Table | None, classes: list[str], *, top: int, conflicts: dict[int, list[str]]
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """The Duplicates tab: the ``top`` most urgent groups (conflict, leak, exact, near;
    larger groups first within a kind, then by number), the number of groups in the run
    and how many of each kind. Fills ``conflicts`` (group → its labels)."""
    if duplicates is None or duplicates.num_rows == 0:
        return [], 0, {}
    n = duplicates.num_rows
    group_of = duplicates.column("group").cast(pa.int64())
    kind_rank = pc.fill_null(
        pc.index_in(duplicates.column("kind"), value_set=pa.array(DUPLICATE_KINDS)),
        len(DUPLICATE_KINDS),
    )
    keyed = pa.table(
        {
            "group": group_of,
            "kind_rank": kind_rank.cast(pa.int64()),
            "pos": pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    per_group = keyed.group_by("group").aggregate([("kind_rank", "min"), ("pos", "count")])
    order = pc.sort_indices(
        per_group,
        sort_keys=[
            ("kind_rank_min", "ascending"),
            ("pos_count", "descending"),
            ("group", "ascending"),
        ],
    )
    chosen = per_group.take(order[:top]).column("group")
    wanted = pa.concat_arrays([chosen.combine_chunks(), pa.array(list(conflicts), type=pa.int64())])
    counted = {
        int(v["values"]): int(v["counts"])
        for v in pc.value_counts(per_group.column("kind_rank_min")).to_pylist()
    }
    kinds = {
        (DUPLICATE_KINDS[rank] if rank < len(DUPLICATE_KINDS) else "other"): counted[rank]
        for rank in sorted(counted)
    }
    # Members of the chosen groups (and of the conflict badges' groups), in file order:
    # the first member first.
    members = (
        duplicates.append_column("pos", keyed.column("pos"))
        .filter(pc.is_in(group_of, value_set=wanted))
        .sort_by([("pos", "ascending")])
    )
    by_group: dict[int, list[dict[str, Any]]] = {}
    for r in members.to_pylist():
        by_group.setdefault(int(r["group"]), []).append(r)
    for group in conflicts:
        conflicts[group] = [str(m["label"]) for m in by_group.get(group, [])]
    class_index = {c: i for i, c in enumerate(classes)}
    groups = []
    for group in chosen.to_pylist():
        rows = by_group[int(group)]
        counts: dict[str, int] = {}
        for m in rows:
            counts[str(m["label"])] = counts.get(str(m["label"]), 0) + 1
        # Relabel all: to the most common label, ties by class order.
        target = min(counts, key=lambda c: (-counts[c], class_index.get(c, len(classes)), c))
        groups.append(
            {
                "group": int(group),
                "kind": str(rows[0]["kind"]),
                "flags": [k for k in ("conflict", "leak", "exact") if any(m[k] for m in rows)],
                "target": target,
                "members": [
                    {
                        "id": str(m["id"]),
                        "label": str(m["label"]),
                        "split": _text(m["split"]),
                        "similarity": _number(m["similarity"], 4),
                        "measured": bool(m["measured"]),
                    }
                    for m in rows
                ],
            }
        )
    return groups, per_group.num_rows, kinds


def _page(
    config: RunConfig,
    table: pa.Table,
    duplicates: pa.Table | None,
    *,
    top: int,
    thumb_size: int,
    neighbours: int,
) -> _Page:
    """The page of a run's suspects table and duplicates table (None: a run without
    duplicates.parquet); columns the run lacks leave their tab empty."""
    run_id = config.run_id
    # Filter and sort in Arrow: a million-row run makes Python rows only for the cards.
    cards, n_suspects, badges = _wrong_label_cards(table, top=top)
    outliers, n_outliers = _outlier_cards(table, top=top)
    groups, n_groups, kinds = _duplicate_groups(
        duplicates, config.classes, top=top, conflicts=badges
    )
    class_order = {c: i for i, c in enumerate(config.classes)}
    for card in cards:
        group = card.pop("group", None)
        if group is not None:  # the badge names the other labels of its copies
            others = {x for x in badges.get(group, []) if x != card["label"]}
            card["conflict"] = sorted(
                others, key=lambda c: (class_order.get(c, len(class_order)), c)
            )

    needed = pa.array(
        sorted(
            {n for c in cards for n in (c["id"], *c["given"], *c["sugg"])}
            | {c["id"] for c in outliers}
            | {m["id"] for g in groups for m in g["members"][:MEMBERS_SHOWN]}
        ),
        type=pa.string(),
    )
    lookup = table.select(["id", "label", "path"]).filter(
        pc.is_in(table.column("id").cast(pa.string()), value_set=needed)
    )
    label_of = dict(
        zip(lookup.column("id").to_pylist(), lookup.column("label").to_pylist(), strict=True)
    )
    path_of = dict(
        zip(lookup.column("id").to_pylist(), lookup.column("path").to_pylist(), strict=True)
    )

    wanted: dict[str, None] = {}
    for c in cards:
        c["given"] = [n for n in c["given"] if n in path_of][:neighbours]
        c["sugg"] = [n for n in c["sugg"] if n in path_of][:neighbours]
        for n in (c["id"], *c["given"], *c["sugg"]):
            wanted[n] = None
    for c in outliers:
        wanted[c["id"]] = None
    for g in groups:
        for m in g["members"][:MEMBERS_SHOWN]:
            if m["id"] in path_of:
                wanted[m["id"]] = None

    order = list(wanted)
    # Files, objects in a store (downloaded once each, in threads: network-bound) or
    # images embedded in the manifest, found as `score` found them.
    sources = row_sources(
        config.manifest, config.manifest_dir, order, [str(path_of[n]) for n in order]
    )
    workers = 16 if sources.remote.any() else max(1, min(8, os.cpu_count() or 1))

    def thumbnail(i: int) -> str | None:
        source = sources[i]
        return None if source is None else encode_thumbnail(source, thumb_size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        uris = list(pool.map(thumbnail, range(len(order))))
    images = {n: uri for n, uri in zip(order, uris, strict=True) if uri is not None}
    on_cards = {c["id"] for c in cards} | {c["id"] for c in outliers}
    data = {
        "run_id": run_id,
        "classes": config.classes,
        "top": top,
        "version": __version__,
        "suspects": n_suspects,
        "noise": config.noise,
        "cards": cards,
        "has_outliers": "is_outlier" in table.column_names,
        "n_outliers": n_outliers,
        "outliers": outliers,
        "has_duplicates": duplicates is not None,
        "n_groups": n_groups,
        "group_kinds": kinds,
        "groups": groups,
        "members_shown": MEMBERS_SHOWN,
        # Other rows' labels and paths (neighbours, group members), for captions and
        # tooltips.
        "rows": {n: [str(label_of[n]), str(path_of[n])] for n in order if n not in on_cards},
    }
    parts = {
        "TITLE": html.escape(f"noisyclean review · run {run_id}"),
        "THUMB": str(int(thumb_size)),
        "NBTHUMB": str(max(24, round(thumb_size * 0.6))),
        "DATA": script_json(data),
        "IMAGES": script_json(images),
    }
    # One pass, so that a label that spells a placeholder stays a label.
    page = re.sub(r"@@(TITLE|THUMB|NBTHUMB|DATA|IMAGES)@@", lambda m: parts[m[1]], _template())
    return _Page(
        html=page,
        run_id=run_id,
        cards=len(cards),
        suspects=n_suspects,
        images=len(images),
        missing_images=sum(1 for n in order if n not in images)
        + sum(1 for g in groups for m in g["members"][:MEMBERS_SHOWN] if m["id"] not in path_of),
        groups=len(groups),
        duplicate_groups=n_groups,
        outlier_cards=len(outliers),
        outliers=n_outliers,
    )


def build_review(
    run_dir: str | Path, *, top: int = 500, thumb_size: int = 96, neighbours: int = 4
) -> str:
    """The review page of a run: its ``top`` most suspicious suspects in rank order, its
    ``top`` most urgent near-duplicate groups and its ``top`` most outlying rows.

    Args:
        run_dir: a run directory written by ``noisyclean train``.
        top: at most this many cards per tab (suspects with ``is_suspect`` by ``rank``,
            outliers left out; duplicate groups; outliers by ``outlier``).
        thumb_size: largest side of the embedded thumbnails, in pixels.
        neighbours: neighbour thumbnails per class (given, suggested) on each card.

    Returns:
        One self-contained HTML document.

    Raises:
        ArtifactError: the run directory lacks a file or key the page needs.
        ValueError: an option out of range.
    """
    return _build(Path(run_dir), top=top, thumb_size=thumb_size, neighbours=neighbours).html


def write_review(
    run_dir: str | Path,
    output: str | Path,
    *,
    top: int = 500,
    thumb_size: int = 96,
    neighbours: int = 4,
) -> ReviewSummary:
    """Write ``build_review``'s page to ``output`` atomically and say what it holds."""
    output = Path(output)
    if output.is_dir():
        raise NoisyCleanError(f"{output}: is a folder; give the page's file name, e.g. review.html")
    page = _build(Path(run_dir), top=top, thumb_size=thumb_size, neighbours=neighbours)
    try:
        write_text(output, page.html)
    except OSError as err:
        raise NoisyCleanError(f"{output}: cannot write ({err.strerror or err})") from None
    return ReviewSummary(
        output=output,
        run_id=page.run_id,
        cards=page.cards,
        suspects=page.suspects,
        images=page.images,
        missing_images=page.missing_images,
        size=output.stat().st_size,
        groups=page.groups,
        duplicate_groups=page.duplicate_groups,
        outlier_cards=page.outlier_cards,
        outliers=page.outliers,
    )


def _shortcut_items() -> str:
    return "".join(
        f"<li><kbd>{html.escape(key)}</kbd> {html.escape(what)}</li>" for key, what in SHORTCUTS
    )


#: The page's markup, style and script: package data in ``noisyclean/review_page/``
#: (shipped by pyproject.toml's ``[tool.setuptools.package-data]``).
PAGE_FILES = ("page.html", "page.css", "page.js")


def _page_file(name: str) -> str:
    from importlib.resources import files

    return (files("noisyclean") / "review_page" / name).read_text(encoding="utf-8")


def _template() -> str:
    """page.html with page.css, page.js and the shortcut list inlined, so the page stays
    one self-contained file.

    What is left are the run's placeholders, which ``_build`` fills in one pass:
    ``@@TITLE@@`` (escaped text), ``@@THUMB@@`` and ``@@NBTHUMB@@`` (pixels, used by
    page.css), ``@@DATA@@`` and ``@@IMAGES@@`` (``script_json``).
    """
    page, css, js = (_page_file(name) for name in PAGE_FILES)
    # Inlined text must not end its element early (page.css and page.js are ours, but a
    # stray "</script>" in them would turn the rest of the script into markup).
    if re.search(r"</style", css, re.I) or re.search(r"</script", js, re.I):
        raise RuntimeError("review_page: page.css or page.js contains a closing tag")
    parts = {"STYLE": css.rstrip(), "SCRIPT": js.rstrip(), "SHORTCUTS": _shortcut_items()}
    return re.sub(r"@@(STYLE|SCRIPT|SHORTCUTS)@@", lambda m: parts[m[1]], page)
