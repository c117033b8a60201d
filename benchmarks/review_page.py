"""Size and load time of the review page as the number of classes grows.

Synthesizes run directories (config.json, model.safetensors, embeddings.parquet and
suspects.parquet through ``noisyclean.artifacts.write_run``, plus 28×28 greyscale noise
PNGs), writes each one's review page with ``noisyclean.review.write_review``, and loads
each page in headless Chromium (Debian's, driven by Playwright):

- size: the page in bytes;
- load: from ``page.goto(file://…)`` until the first card is rendered (median of
  ``--loads`` loads, each in a fresh tab);
- DOM: elements in the loaded page (a per-card class menu would show here);
- keystroke: the class picker's filter and redraw for one keystroke, timed inside the page
  (median over a set of queries).

Every run has the same rows, thumbnails and neighbours; only the class names differ, so
the columns compare the class list's cost alone.

    .venv/bin/python benchmarks/review_page.py                 # 10 and 1,000 classes
    .venv/bin/python benchmarks/review_page.py --classes 10 1000 10000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from noisyclean.artifacts import RunConfig, write_run
from noisyclean.review import write_review

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
#: Rows share a group with the rows whose index is the same modulo GROUPS; a row's label
#: is its group's class, so neighbours "of the same class" are the same rows in every run.
GROUPS = 1000
NEIGHBOURS = 4
ADJECTIVES = (
    "spotted",
    "striped",
    "lesser",
    "greater",
    "common",
    "northern",
    "southern",
    "eastern",
    "western",
    "red",
    "blue",
    "green",
    "black",
    "white",
    "golden",
    "silver",
    "grey",
    "brown",
    "crested",
    "long-tailed",
    "short-eared",
    "giant",
    "dwarf",
    "wild",
    "mountain",
    "river",
    "desert",
    "forest",
    "marsh",
)
NOUNS = (
    "heron",
    "owl",
    "warbler",
    "finch",
    "sparrow",
    "hawk",
    "eagle",
    "falcon",
    "kingfisher",
    "thrush",
    "wren",
    "plover",
    "sandpiper",
    "gull",
    "tern",
    "swift",
    "swallow",
    "lark",
    "pipit",
    "bunting",
    "oriole",
    "jay",
    "crow",
    "magpie",
    "ibis",
    "stork",
    "crane",
    "rail",
    "coot",
    "grebe",
)
#: Queries typed into the picker for the keystroke timing: short ones match the most.
QUERIES = ("s", "sp", "spo", "e", "er", "ow", "heron", "n 1", "9", "zzz", "gold", "al")


def class_names(k: int) -> list[str]:
    """``k`` distinct, sorted class names like "spotted heron 42"."""
    names = [
        f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]} {i}"
        for i in range(k)
    ]
    return sorted(names)


def write_images(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = f"images/{i:05d}.png"
        pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / path)
        paths.append(path)
    return paths


def write_synthetic_run(
    run_dir: Path, root: Path, paths: list[str], classes: list[str], *, suspects: int
) -> None:
    n, k = len(paths), len(classes)
    rng = np.random.default_rng(1)
    ids = [f"r{i:05d}" for i in range(n)]
    group = np.arange(n) % GROUPS
    members = [np.flatnonzero(group == g) for g in range(GROUPS)]
    label = [classes[g % k] for g in group]
    given, sugg, suggested, neighbours = [], [], [], []
    for i in range(n):
        g = int(group[i])
        # Another group whose class differs in every run (the group's class is g % k).
        s = int((g + 1 + rng.integers(0, GROUPS - 1)) % GROUPS)
        while s % min(k, GROUPS) == g % min(k, GROUPS):
            s = (s + 1) % GROUPS
        mine = [ids[j] for j in members[g] if j != i][:NEIGHBOURS]
        theirs = [ids[j] for j in members[s]][:NEIGHBOURS]
        given.append(mine)
        sugg.append(theirs)
        neighbours.append(mine + theirs)
        suggested.append(classes[s % k])
    rank = pd.array([i + 1 if i < suspects else None for i in range(n)], dtype="Int64")
    frame = pd.DataFrame(
        {
            "id": ids,
            "path": paths,
            "label": label,
            "suggested_label": suggested,
            "suspicion": np.linspace(1.0, 0.0, n, dtype=np.float32),
            "confidence": rng.random(n, dtype=np.float32),
            "neighbour_agreement": rng.random(n, dtype=np.float32),
            "neighbours": neighbours,
            "neighbours_suggested": sugg,
            "is_suspect": np.arange(n) < suspects,
            "rank": rank,
            "status": "ok",
            "neighbours_given": given,
        }
    )
    dim, emb = 16, 8
    config = RunConfig(
        run_id=f"bench-{k}-classes",
        classes=classes,
        backbone="synthetic",
        image_size=28,
        manifest=str(root / "manifest.csv"),
        manifest_dir=str(root),
        conf=str(root / "conf.parquet"),
        cache_dir=str(root / "cache"),
        feature_dim=dim,
        embedding_dim=emb,
        train={"embedding_dim": emb},
        suspects={},
        epoch_losses=[],
    )
    write_run(
        run_dir,
        config,
        tensors={
            "head.linear.weight": rng.standard_normal((emb, dim), dtype=np.float32),
            "head.linear.bias": np.zeros(emb, dtype=np.float32),
        },
        embeddings=rng.standard_normal((n, emb), dtype=np.float32),
        suspects=frame,
    )


def use_page_files(folder: Path) -> None:
    """Build pages from page.html/css/js in ``folder`` instead of the package's."""
    import noisyclean.review as review

    review._page_file = lambda name: (folder / name).read_text(encoding="utf-8")  # type: ignore[assignment]


def measure(browser: Any, page_path: Path, loads: int) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    times = []
    for _ in range(loads):
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda err, errors=errors: errors.append(str(err)))
        start = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="commit")
        page.wait_for_selector("article.card", state="visible")
        times.append(time.perf_counter() - start)
        page.wait_for_selector("body[data-ready='1']")
        if errors:
            raise RuntimeError(f"{page_path}: script errors: {errors}")
        page.close()
    page = context.new_page()
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    elements = page.evaluate("document.getElementsByTagName('*').length")
    keystroke = float("nan")
    page.locator("article.card").first.locator(".info").click()
    page.keyboard.press("/")
    if page.evaluate("document.activeElement && document.activeElement.id") == "picker-input":
        samples = page.evaluate(
            """queries => {
              const input = document.getElementById("picker-input");
              const out = [];
              for (let round = 0; round < 5; round++) {
                for (const q of queries) {
                  input.value = q;
                  const t = performance.now();
                  input.dispatchEvent(new Event("input"));
                  document.getElementById("picker-list").getBoundingClientRect();  // layout
                  out.push(performance.now() - t);
                }
              }
              return out;
            }""",
            list(QUERIES),
        )
        keystroke = statistics.median(samples)
    context.close()
    return {"load": statistics.median(times), "elements": elements, "keystroke": keystroke}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--cards", type=int, default=500, help="cards on each page")
    parser.add_argument("--rows", type=int, default=5000, help="rows in each run")
    parser.add_argument("--loads", type=int, default=5, help="loads per page (median)")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temp one)")
    parser.add_argument(
        "--page-dir", type=Path, help="build with page.html/css/js from here (to compare)"
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
        return 1
    if args.page_dir:
        use_page_files(args.page_dir)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        root = work / "data"
        paths = write_images(root, args.rows)
        results = []
        for k in args.classes:
            run_dir = work / f"run-{k}"
            write_synthetic_run(run_dir, root, paths, class_names(k), suspects=args.cards + 100)
            summary = write_review(run_dir, work / f"review-{k}.html", top=args.cards)
            results.append((k, summary))
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for k, summary in results:
                m = measure(browser, summary.output, args.loads)
                rows.append((k, summary, m))
            browser.close()

    print(f"\n{args.cards}-card review pages, {args.rows:,} rows, 28×28 noise thumbnails\n")
    print(
        "| classes | cards | thumbnails | page size (bytes) | load to first card (ms, "
        f"median of {args.loads}) | DOM elements | picker keystroke (ms) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k, summary, m in rows:
        print(
            f"| {k:,} | {summary.cards} | {summary.images:,} | {summary.size:,} | "
            f"{m['load'] * 1000:.0f} | {m['elements']:,} | {m['keystroke']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
