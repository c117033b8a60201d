"""The review page: one self-contained HTML file to decide on a run's suspects.

The page's markup, style and script are the package files ``review_page/page.html``,
``page.css`` and ``page.js``, inlined into the output. The suspects are filtered and
sorted in Arrow, so a million-row run makes Python rows only for the cards shown.

The page works offline from a ``file://`` URL: no CDN, no server, no fetch. Thumbnails
are embedded once each as ``data:`` URIs (downscaled, WEBP or JPEG, whichever is
smaller), in one JSON map from row id to URI, so a neighbour shown on many cards costs
its bytes once. The images are read as ``score`` read them (``noisyclean.sources``):
files, objects in a store (downloaded in threads, URLs as written, credentials never on
the page) or bytes embedded in the manifest.

Safety: the run's labels, paths and ids are data, never markup. They are embedded as
JSON inside ``<script type="application/json">`` with ``<``, ``>``, ``&``, U+2028 and
U+2029 escaped, and the page's script builds the DOM with ``createElement`` and
``textContent`` only.

Decisions (keep, relabel, drop) persist in the browser's localStorage under the run's
``run_id`` and are exported as ``decisions.csv`` (``id,decision,new_label``; only the
decided rows are written, and ``noisyclean apply`` keeps every row the file does not
name).
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

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from noisyclean import __version__
from noisyclean.artifacts import read_run_config, read_suspects, write_text
from noisyclean.errors import NoisyCleanError
from noisyclean.images import UnreadableImageError, load_image
from noisyclean.manifest import row_sources
from noisyclean.sources import ImageSource

#: JPEG/WEBP quality of the thumbnails: small pages, still good enough to judge a label.
THUMB_QUALITY = 70

#: Keyboard shortcuts, as the page lists them (the page's script implements the same).
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("j / ↓", "next card"),
    ("k / ↑", "previous card"),
    ("a", "keep (the given label is right)"),
    ("r", "relabel to the suggested label"),
    ("/ or t", "relabel to any class: type part of its name, ↑/↓ pick, Enter relabel, Esc close"),
    ("1–9, 0", "relabel to class 1–9, 10 (10 classes at most; with more, a digit starts a search)"),
    ("d", "drop the row"),
    ("u", "undo: clear the card's decision"),
    ("?", "show or hide this list"),
)


@dataclass(frozen=True)
class ReviewSummary:
    """What ``write_review`` wrote.

    Attributes:
        output: the HTML page.
        run_id: the run's id (the page's localStorage key).
        cards: suspects shown on the page.
        suspects: suspects in the run (``cards`` is at most ``top`` of them).
        images: distinct thumbnails embedded.
        missing_images: rows on the page whose image is missing or unreadable.
        size: the page's size in bytes.
    """

    output: Path
    run_id: str
    cards: int
    suspects: int
    images: int
    missing_images: int
    size: int


@dataclass(frozen=True)
class _Page:
    html: str
    run_id: str
    cards: int
    suspects: int
    images: int
    missing_images: int


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


def _build(run_dir: Path, *, top: int, thumb_size: int, neighbours: int) -> _Page:
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if thumb_size < 8:
        raise ValueError(f"thumb_size must be at least 8, got {thumb_size}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be at least 0, got {neighbours}")
    config = read_run_config(run_dir)
    table = read_suspects(run_dir, config)
    run_id = config.run_id
    # Filter and sort in Arrow: a million-row run makes pandas rows only for the cards.
    flagged = pc.and_(
        pc.fill_null(table.column("is_suspect"), False), pc.is_valid(table.column("rank"))
    )
    suspects = table.filter(flagged)
    n_suspects = suspects.num_rows
    order_by = pc.sort_indices(suspects, sort_keys=[("rank", "ascending")])
    shown = suspects.take(order_by[:top]).to_pandas()
    needed = pa.array(
        sorted(
            {
                str(n)
                for col in ("neighbours_given", "neighbours_suggested")
                for ids in shown[col]
                for n in _ids(ids)
            }
            | set(shown["id"].astype(str))
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

    cards = []
    wanted: dict[str, None] = {}
    records: list[dict[str, Any]] = shown.to_dict("records")  # type: ignore[assignment]
    for r in records:
        rid, label = str(r["id"]), str(r["label"])
        given = [n for n in _ids(r["neighbours_given"]) if n in path_of][:neighbours]
        sugg = [n for n in _ids(r["neighbours_suggested"]) if n in path_of][:neighbours]
        suggested = r["suggested_label"]
        cards.append(
            {
                "id": rid,
                "path": str(r["path"]),
                "label": label,
                "suggested": None if suggested is None or pd.isna(suggested) else str(suggested),
                "rank": int(r["rank"]),
                "suspicion": _number(r["suspicion"], 4),
                "confidence": _number(r["confidence"], 4),
                "agreement": _number(r["neighbour_agreement"], 3),
                "given": given,
                "sugg": sugg,
            }
        )
        for n in (rid, *given, *sugg):
            wanted[n] = None

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
    card_ids = {c["id"] for c in cards}
    data = {
        "run_id": run_id,
        "classes": config.classes,
        "suspects": n_suspects,
        "top": top,
        "version": __version__,
        "cards": cards,
        # Neighbours' labels and paths, for their captions and tooltips.
        "rows": {n: [str(label_of[n]), str(path_of[n])] for n in order if n not in card_ids},
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
        missing_images=sum(1 for n in order if n not in images),
    )


def build_review(
    run_dir: str | Path, *, top: int = 500, thumb_size: int = 96, neighbours: int = 4
) -> str:
    """The review page of a run: its ``top`` most suspicious suspects, in rank order.

    Args:
        run_dir: a run directory written by ``noisyclean train``.
        top: at most this many cards (suspects with ``is_suspect``, by ``rank``).
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
