"""The review page: one self-contained HTML file to decide on a run's suspects.

The page works offline from a ``file://`` URL: no CDN, no server, no fetch. Thumbnails
are embedded once each as ``data:`` URIs (downscaled, WEBP or JPEG, whichever is
smaller), in one JSON map from row id to URI, so a neighbour shown on many cards costs
its bytes once.

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
from PIL import Image, ImageOps

from noisyclean import __version__
from noisyclean.artifacts import SUSPECTS_SCHEMA, ArtifactError, read_parquet, write_text
from noisyclean.errors import NoisyCleanError
from noisyclean.manifest import resolve_path

#: JPEG/WEBP quality of the thumbnails: small pages, still good enough to judge a label.
THUMB_QUALITY = 70

#: Keyboard shortcuts, as the page lists them (the page's script implements the same).
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("j / ↓", "next card"),
    ("k / ↑", "previous card"),
    ("a", "keep (the given label is right)"),
    ("r", "relabel to the suggested label"),
    ("1–9, 0", "relabel to class 1–9, 10 (numbered in the class menu)"),
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


def encode_thumbnail(path: Path, size: int, *, quality: int = THUMB_QUALITY) -> str | None:
    """A ``data:`` URI of the image downscaled to fit ``size``×``size`` (never upscaled),
    as WEBP or JPEG, whichever is smaller; None if the file is missing or unreadable."""
    try:
        with Image.open(path) as opened:
            # JPEG decodes at a reduced scale directly: big photos cost little.
            opened.draft(None, (size, size))
            im = ImageOps.exif_transpose(opened)
            im = _flatten(im)
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
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


def _flatten(im: Image.Image) -> Image.Image:
    """L or RGB, with any transparency composited on white (JPEG has no alpha)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """suspects.parquet and config.json of a run directory, checked for what the page needs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such run directory (written by `noisyclean train`)")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"{cfg_path}: no such file; is {run_dir} a run directory?")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{cfg_path}: not valid JSON ({err})") from None
    frame, meta = read_parquet(run_dir / "suspects.parquet", required=SUSPECTS_SCHEMA)
    if not isinstance(config, dict):
        raise ArtifactError(f"{cfg_path}: not a JSON object")
    for key in ("run_id", "classes", "manifest_dir"):
        if key not in config and key in meta:
            config[key] = meta[key]
        if key not in config:
            raise ArtifactError(f"{cfg_path}: key '{key}' missing; was it written by train?")
    return frame, config


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
    frame, config = load_run(run_dir)
    root = Path(config["manifest_dir"])
    run_id = str(config["run_id"])
    suspects = frame[frame["is_suspect"].fillna(False).astype(bool) & frame["rank"].notna()]
    shown = suspects.sort_values("rank", kind="stable").head(top)
    label_of = dict(zip(frame["id"], frame["label"], strict=True))
    path_of = dict(zip(frame["id"], frame["path"], strict=True))

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
    paths = [resolve_path(root, str(path_of[n])) for n in order]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        uris = list(pool.map(lambda p: encode_thumbnail(p, thumb_size), paths))
    images = {n: uri for n, uri in zip(order, uris, strict=True) if uri is not None}
    card_ids = {c["id"] for c in cards}
    data = {
        "run_id": run_id,
        "classes": [str(c) for c in config["classes"]],
        "suspects": len(suspects),
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
    page = re.sub(r"@@(TITLE|THUMB|NBTHUMB|DATA|IMAGES)@@", lambda m: parts[m[1]], _TEMPLATE)
    return _Page(
        html=page,
        run_id=run_id,
        cards=len(cards),
        suspects=len(suspects),
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


_TEMPLATE = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: blob:;
  style-src 'unsafe-inline'; script-src 'unsafe-inline'; form-action 'none'; base-uri 'none'">
<meta name="referrer" content="no-referrer">
<title>@@TITLE@@</title>
<style>
:root {
  --thumb: @@THUMB@@px; --nb: @@NBTHUMB@@px;
  --bg: #f3f4f6; --card: #fff; --ink: #111827; --muted: #6b7280; --line: #e5e7eb;
  --keep: #15803d; --relabel: #1d4ed8; --drop: #b91c1c; --accent: #f59e0b;
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--ink); }
header { position: sticky; top: 0; z-index: 10; background: #111827; color: #f9fafb;
  padding: 8px 16px; box-shadow: 0 1px 4px rgba(0,0,0,.3); }
header .row { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header .sub { color: #9ca3af; font-size: 12px; }
#counter { font-weight: 600; background: #374151; border-radius: 999px; padding: 2px 10px; }
header label { font-size: 12px; color: #d1d5db; }
header select, header button, .import { font: inherit; font-size: 13px; border-radius: 6px;
  border: 1px solid #4b5563; background: #1f2937; color: #f9fafb; padding: 3px 8px;
  cursor: pointer; }
header button:hover, .import:hover { background: #374151; }
.import input { display: none; }
.spacer { flex: 1; }
#status { font-size: 12px; color: #fcd34d; min-height: 1em; }
#help { margin: 6px 0 0; font-size: 12px; color: #d1d5db; }
#help ul { list-style: none; display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 0; padding: 0; }
#help[hidden] { display: none; }
#classkeys { color: #9ca3af; margin-top: 2px; }
kbd { display: inline-block; font: 11px ui-monospace, SFMono-Regular, Menlo, monospace;
  padding: 0 4px; border: 1px solid #9ca3af; border-bottom-width: 2px; border-radius: 4px;
  background: #f9fafb; color: #111827; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 12px;
  padding: 12px 16px 60vh; }
.card { background: var(--card); border: 1px solid var(--line); border-left: 6px solid var(--line);
  border-radius: 8px; padding: 10px 12px; display: grid; gap: 8px;
  grid-template-columns: auto 1fr; grid-template-areas: "thumb info" "nbs nbs" "actions actions"; }
.card[hidden] { display: none; }
.card:focus:not(.current) { outline: none; }
.card.current { outline: 3px solid var(--accent); outline-offset: 1px; }
.card.d-keep { border-left-color: var(--keep); }
.card.d-relabel { border-left-color: var(--relabel); }
.card.d-drop { border-left-color: var(--drop); background: #fef2f2; }
.card.d-drop .big img { opacity: .45; }
.big { grid-area: thumb; margin: 0; }
.thumb { display: block; object-fit: contain; background: #fff; border: 1px solid var(--line);
  border-radius: 4px; }
.thumb.pix { image-rendering: pixelated; }
.big .thumb { width: var(--thumb); height: var(--thumb); }
.missing { display: flex; align-items: center; justify-content: center; text-align: center;
  background: repeating-linear-gradient(45deg, #f3f4f6, #f3f4f6 6px, #e5e7eb 6px, #e5e7eb 12px);
  color: var(--muted); font-size: 11px; }
.info { grid-area: info; min-width: 0; display: grid; gap: 2px; align-content: start; }
.title { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.rank { font-weight: 700; color: var(--muted); }
.lab { font-weight: 600; padding: 0 6px; border-radius: 4px; white-space: pre-wrap;
  word-break: break-word; }
.lab.given { background: #fee2e2; color: #7f1d1d; }
.lab.sugg { background: #dbeafe; color: #1e3a8a; }
.arrow { color: var(--muted); }
.id, .path { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted);
  white-space: pre-wrap; word-break: break-all; }
.scores { display: flex; gap: 12px; font-size: 12px; color: var(--muted); }
.scores b { color: var(--ink); font-weight: 600; }
.verdict { margin-left: auto; font-weight: 600; font-size: 12px; color: #fff; border-radius: 999px;
  padding: 1px 10px; white-space: pre-wrap; word-break: break-word; }
.verdict:empty { display: none; }
.d-keep .verdict { background: var(--keep); }
.d-relabel .verdict { background: var(--relabel); }
.d-drop .verdict { background: var(--drop); }
.nbs { grid-area: nbs; display: grid; gap: 4px; }
.nbrow { display: flex; align-items: flex-start; gap: 6px; }
.nbhead { width: 92px; flex: none; font-size: 11px; color: var(--muted); padding-top: 2px; }
.nbhead span { display: block; font-weight: 600; color: var(--ink); word-break: break-word; }
.nb { margin: 0; width: var(--nb); }
.nb .thumb { width: var(--nb); height: var(--nb); }
.nb figcaption { font-size: 10px; color: var(--muted); overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
.none { font-size: 11px; color: var(--muted); padding-top: 2px; }
.actions { grid-area: actions; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.actions button, .actions select { font: inherit; font-size: 13px; border-radius: 6px;
  border: 1px solid #d1d5db; background: #f9fafb; padding: 3px 8px; cursor: pointer;
  max-width: 100%; }
.actions select, header select { max-width: 220px; }
.actions button:hover { background: #eef2ff; }
.actions button.on { color: #fff; }
.actions button.on[data-act="keep"] { background: var(--keep); border-color: var(--keep); }
.actions button.on[data-act="relabel"] { background: var(--relabel); border-color: var(--relabel); }
.actions button.on[data-act="drop"] { background: var(--drop); border-color: var(--drop); }
.actions select.on { border-color: var(--relabel); color: var(--relabel); font-weight: 600; }
#empty { padding: 40px; text-align: center; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; padding: 0 16px 16px; }
</style>
</head>
<body>
<header>
  <div class="row">
    <h1>noisyclean review</h1>
    <span class="sub" id="runinfo"></span>
    <span id="counter" role="status" aria-live="polite">0 of 0 decided</span>
    <span class="spacer"></span>
    <label>given <select id="filter-given"><option value="">all classes</option></select></label>
    <label>suggested <select id="filter-sugg"><option value="">all classes</option></select></label>
    <label>sort <select id="sort">
      <option value="desc">suspicion, highest first</option>
      <option value="asc">suspicion, lowest first</option>
    </select></label>
    <button id="export" type="button" title="Download the decisions as decisions.csv"
      >Export decisions.csv</button>
    <label class="import" title="Load a decisions.csv exported earlier">Import decisions.csv<input
      id="import" type="file" accept=".csv,text/csv"></label>
    <button id="toggle-help" type="button" title="Keyboard shortcuts (?)">Shortcuts</button>
  </div>
  <div id="help">
    <ul>"""
    + _shortcut_items()
    + """</ul>
    <div id="classkeys"></div>
  </div>
  <div id="status" role="status" aria-live="polite"></div>
</header>
<main id="cards"></main>
<footer>Decisions are saved in this browser (localStorage) for this run only. A row without
a decision counts as keep; the export lists only decided rows. Apply them with
<code>noisyclean apply MANIFEST decisions.csv -o clean.csv</code>.</footer>
<script type="application/json" id="nc-data">@@DATA@@</script>
<script type="application/json" id="nc-images">@@IMAGES@@</script>
<script>
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("nc-data").textContent);
  const IMAGES = new Map(
    Object.entries(JSON.parse(document.getElementById("nc-images").textContent)));
  const ROWS = new Map(Object.entries(DATA.rows));
  const CLASSES = DATA.classes;
  const CARDS = DATA.cards;
  const STORE_KEY = "noisyclean-review:" + DATA.run_id;
  const VALID = new Set(["keep", "relabel", "drop"]);
  const cardById = new Map(CARDS.map((c) => [c.id, c]));
  const elById = new Map();
  let decisions = new Map();
  let visible = [];
  let current = -1;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  }
  const say = (text) => { document.getElementById("status").textContent = text; };
  const fmt = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

  function thumb(id, title) {
    const uri = IMAGES.get(id);
    if (typeof uri !== "string" || !uri.startsWith("data:image/")) {
      return el("div", { class: "thumb missing", text: "no image", title: title });
    }
    const img = el("img",
      { class: "thumb", alt: title, title: title, loading: "lazy", decoding: "async" });
    img.addEventListener("load", () => {
      if (img.naturalWidth < img.clientWidth) img.classList.add("pix");
    });
    img.src = uri;
    return img;
  }

  function neighbourRow(kind, cls, ids) {
    const row = el("div", { class: "nbrow" },
      el("div", { class: "nbhead", text: kind }, el("span", { text: cls === null ? "–" : cls })));
    if (!ids.length) row.append(el("span", { class: "none", text: "no neighbours of this class" }));
    for (const id of ids) {
      const card = cardById.get(id);
      const info = ROWS.get(id) || (card ? [card.label, card.path] : ["?", ""]);
      row.append(el("figure", { class: "nb" },
        thumb(id, id + " · " + info[0] + " · " + info[1]),
        el("figcaption", { text: info[0], title: info[0] })));
    }
    return row;
  }

  function makeCard(c) {
    const select = el("select", { title: "Relabel to any class (keys 1–9, 0)" },
      el("option", { value: "", text: "Relabel to…" }));
    CLASSES.forEach((name, i) => {
      const key = i < 9 ? String(i + 1) : i === 9 ? "0" : "";
      select.append(el("option", { value: String(i), text: (key ? key + " · " : "") + name }));
    });
    select.addEventListener("change", () => {
      if (select.value !== "") decide(c.id, "relabel", CLASSES[Number(select.value)]);
      select.blur();  // the shortcuts work again at once
    });
    const button = (act, text, key) => {
      const b = el("button", { type: "button", "data-act": act },
        text + " ", el("kbd", { text: key }));
      b.addEventListener("click", () => {
        if (act === "keep") decide(c.id, "keep", "");
        else if (act === "relabel") decide(c.id, "relabel", c.suggested);
        else if (act === "drop") decide(c.id, "drop", "");
        else clear(c.id);
      });
      return b;
    };
    const suggested = c.suggested === null ? "–" : c.suggested;
    const relabelBtn = button("relabel", "Relabel → " + suggested, "r");
    if (c.suggested === null) relabelBtn.disabled = true;
    const card = el("article", { class: "card", "data-id": c.id, tabIndex: -1 },
      el("figure", { class: "big" }, thumb(c.id, c.id + " · " + c.path)),
      el("div", { class: "info" },
        el("div", { class: "title" },
          el("span", { class: "rank", text: "#" + c.rank }),
          el("span", { class: "lab given", text: c.label, title: "given label" }),
          el("span", { class: "arrow", text: "→" }),
          el("span", { class: "lab sugg", text: suggested, title: "suggested label" }),
          el("span", { class: "verdict" })),
        el("div", { class: "id", text: c.id, title: "id" }),
        el("div", { class: "path", text: c.path, title: "path" }),
        el("div", { class: "scores" },
          el("span", {}, "suspicion ", el("b", { text: fmt(c.suspicion, 3) })),
          el("span", {}, "confidence ", el("b", { text: fmt(c.confidence, 3) })),
          el("span", {}, "neighbour agreement ", el("b", { text: fmt(c.agreement, 2) })))),
      el("div", { class: "nbs" },
        neighbourRow("given class", c.label, c.given),
        neighbourRow("suggested class", c.suggested, c.sugg)),
      el("div", { class: "actions" },
        button("keep", "Keep", "a"), relabelBtn, select,
        button("drop", "Drop", "d"), button("clear", "Clear", "u")));
    card.addEventListener("click", (ev) => {
      const i = visible.indexOf(c.id);
      if (i >= 0 && i !== current) setCurrent(i, false);
    });
    return card;
  }

  function paint(id) {
    const card = elById.get(id);
    if (!card) return;
    const c = cardById.get(id);
    const d = decisions.get(id);
    card.classList.remove("d-keep", "d-relabel", "d-drop");
    if (d) card.classList.add("d-" + d.decision);
    const toSugg = d && d.decision === "relabel" && d.new_label === c.suggested;
    for (const b of card.querySelectorAll("button[data-act]")) {
      const act = b.getAttribute("data-act");
      b.classList.toggle("on", !!d && act === d.decision && (act !== "relabel" || toSugg));
    }
    const select = card.querySelector("select");
    const idx = d && d.decision === "relabel" ? CLASSES.indexOf(d.new_label) : -1;
    select.value = idx >= 0 && !toSugg ? String(idx) : "";
    select.classList.toggle("on", idx >= 0 && !toSugg);
    card.querySelector(".verdict").textContent = !d ? "" :
      d.decision === "relabel" ? "relabel → " + d.new_label : d.decision;
    card.setAttribute("data-decision", d ? d.decision : "");
  }

  function count() {
    let n = 0;
    for (const c of CARDS) if (decisions.has(c.id)) n += 1;
    document.getElementById("counter").textContent = n + " of " + CARDS.length + " decided";
  }

  function save() {
    try {
      const list = [...decisions].map(([id, d]) => [id, d.decision, d.new_label]);
      localStorage.setItem(STORE_KEY, JSON.stringify({ version: 1, decisions: list }));
    } catch (err) {
      say("Decisions could not be saved in this browser (" + err.name +
        "); export them before closing.");
    }
  }

  function load() {
    try {
      const raw = localStorage.getItem(STORE_KEY);
      if (!raw) return;
      const stored = JSON.parse(raw);
      for (const [id, decision, newLabel] of stored.decisions || []) {
        if (typeof id === "string" && VALID.has(decision)) {
          decisions.set(id, { decision: decision, new_label: String(newLabel || "") });
        }
      }
    } catch (err) {
      say("Saved decisions could not be read (" + err.name + "); starting afresh.");
    }
  }

  function setDecision(id, decision, newLabel) {
    const c = cardById.get(id);
    // Relabelling a row to its own label is keeping it.
    if (decision === "relabel" && c && newLabel === c.label) decision = "keep";
    decisions.set(id, { decision: decision, new_label: decision === "relabel" ? newLabel : "" });
  }

  function decide(id, decision, newLabel) {
    if (decision === "relabel" && (newLabel === null || newLabel === "")) return;
    setDecision(id, decision, newLabel);
    save(); paint(id); count();
  }

  function clear(id) {
    decisions.delete(id);
    save(); paint(id); count();
  }

  function setCurrent(i, scroll) {
    if (current >= 0 && current < visible.length) {
      elById.get(visible[current]).classList.remove("current");
    }
    current = visible.length ? Math.max(0, Math.min(i, visible.length - 1)) : -1;
    if (current < 0) return;
    const card = elById.get(visible[current]);
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function refresh() {
    const g = document.getElementById("filter-given").value;
    const s = document.getElementById("filter-sugg").value;
    const dir = document.getElementById("sort").value === "asc" ? 1 : -1;
    const keep = current >= 0 ? visible[current] : null;
    const ordered = CARDS.slice().sort((a, b) =>
      dir * ((a.suspicion ?? 0) - (b.suspicion ?? 0)) || dir * (b.rank - a.rank));
    const main = document.getElementById("cards");
    visible = [];
    for (const c of ordered) {
      const card = elById.get(c.id);
      const show = (g === "" || c.label === g) && (s === "" || c.suggested === s);
      card.hidden = !show;
      main.append(card);
      if (show) visible.push(c.id);
    }
    document.getElementById("empty").hidden = visible.length > 0;
    main.append(document.getElementById("empty"));
    const at = keep === null ? -1 : visible.indexOf(keep);
    for (const c of CARDS) elById.get(c.id).classList.remove("current");
    current = -1;
    setCurrent(at >= 0 ? at : 0, false);
  }

  function csvField(v) {
    const s = String(v);
    return /[",\\r\\n]/.test(s) || s !== s.trim() ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    const lines = ["id,decision,new_label"];
    const done = new Set();
    const add = (id) => {
      const d = decisions.get(id);
      if (!d || done.has(id)) return;
      done.add(id);
      lines.push([id, d.decision, d.new_label].map(csvField).join(","));
    };
    for (const c of CARDS) add(c.id);
    for (const id of decisions.keys()) add(id);  // imported decisions for rows not on this page
    const blob = new Blob([lines.join("\\n") + "\\n"], { type: "text/csv;charset=utf-8" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "decisions.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    say("Exported " + done.size +
      " decisions to decisions.csv (undecided rows are kept by apply).");
  }

  function parseCsv(text) {
    const rows = [];
    let row = [], field = "", quoted = false;
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (ch === '"') quoted = false;
        else field += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { row.push(field); field = ""; }
      else if (ch === "\\n" || ch === "\\r") {
        if (ch === "\\r" && text[i + 1] === "\\n") i++;
        row.push(field); rows.push(row); row = []; field = "";
      } else field += ch;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    return rows.filter((r) => r.length > 1 || r[0] !== "");
  }

  function importCsv(name, text) {
    const rows = parseCsv(text);
    const head = (rows.shift() || []).map((h) => h.trim());
    const col = (n) => head.indexOf(n);
    if (col("id") < 0 || col("decision") < 0) {
      say(name + ": not a decisions file (needs the columns id,decision,new_label);" +
        " nothing imported.");
      return;
    }
    let n = 0, here = 0, skipped = 0;
    for (const r of rows) {
      const id = (r[col("id")] || "").trim();
      const decision = (r[col("decision")] || "").trim().toLowerCase();
      const newLabel = col("new_label") >= 0 ? (r[col("new_label")] || "").trim() : "";
      if (!id || !VALID.has(decision) || (decision === "relabel" && !newLabel)) {
        skipped++;
        continue;
      }
      setDecision(id, decision, newLabel);
      n++;
      if (cardById.has(id)) here++;
    }
    save();
    for (const c of CARDS) paint(c.id);
    count();
    say("Imported " + n + " decisions from " + name + " (" + here + " on this page" +
      (skipped ? ", " + skipped + " rows skipped" : "") + ").");
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const k = ev.key;
    if (k === "?") { toggleHelp(); ev.preventDefault(); return; }
    const step = k === "j" || k === "ArrowDown" ? 1 : k === "k" || k === "ArrowUp" ? -1 : 0;
    if (step) { setCurrent(current + step, true); ev.preventDefault(); return; }
    if (current < 0) return;
    const id = visible[current];
    const c = cardById.get(id);
    let decided = true;
    if (k === "a") decide(id, "keep", "");
    else if (k === "r" && c.suggested !== null) decide(id, "relabel", c.suggested);
    else if (k === "d") decide(id, "drop", "");
    else if (/^[0-9]$/.test(k)) {
      const i = k === "0" ? 9 : Number(k) - 1;
      if (i >= CLASSES.length) return;
      decide(id, "relabel", CLASSES[i]);
    } else if (k === "u") { clear(id); decided = false; }
    else return;
    ev.preventDefault();
    // A decision by key moves on, so a reviewer can go down the list without the mouse.
    if (decided) setCurrent(current + 1, true);
  }

  function toggleHelp() {
    const h = document.getElementById("help");
    h.hidden = !h.hidden;
  }

  function fillFilter(id, values) {
    const sel = document.getElementById(id);
    const counts = new Map();
    for (const v of values) if (v !== null) counts.set(v, (counts.get(v) || 0) + 1);
    const names = CLASSES.filter((n) => counts.has(n))
      .concat([...counts.keys()].filter((n) => !CLASSES.includes(n)));
    for (const name of names) {
      sel.append(el("option", { value: name, text: name + " (" + counts.get(name) + ")" }));
    }
    sel.addEventListener("change", refresh);
  }

  document.getElementById("runinfo").textContent = "run " + DATA.run_id + " · top " + CARDS.length +
    " of " + DATA.suspects + " suspects, most suspicious first";
  document.getElementById("classkeys").textContent = "classes: " +
    CLASSES.slice(0, 10).map((n, i) => (i === 9 ? "0" : String(i + 1)) + " " + n).join(" · ");
  const main = document.getElementById("cards");
  for (const c of CARDS) {
    const card = makeCard(c);
    elById.set(c.id, card);
    main.append(card);
  }
  main.append(el("div", { id: "empty",
    text: CARDS.length ? "No card matches the filters." : "This run has no suspects." }));
  load();
  for (const c of CARDS) paint(c.id);
  count();
  fillFilter("filter-given", CARDS.map((c) => c.label));
  fillFilter("filter-sugg", CARDS.map((c) => c.suggested));
  document.getElementById("sort").addEventListener("change", refresh);
  document.getElementById("export").addEventListener("click", exportCsv);
  document.getElementById("toggle-help").addEventListener("click", toggleHelp);
  document.getElementById("import").addEventListener("change", (ev) => {
    const input = ev.target;
    const file = input.files && input.files[0];
    if (!file) return;
    file.text().then((text) => importCsv(file.name, text))
      .catch((err) => say(file.name + ": could not be read (" + err.name + ")"))
      .finally(() => { input.value = ""; });
  });
  document.addEventListener("keydown", onKey);
  const pad = () => {
    const height = document.querySelector("header").offsetHeight;
    document.documentElement.style.scrollPaddingTop = height + 8 + "px";
  };
  window.addEventListener("resize", pad);
  new ResizeObserver(pad).observe(document.querySelector("header"));
  refresh();
  document.body.setAttribute("data-ready", "1");
})();
</script>
</body>
</html>
"""
)
