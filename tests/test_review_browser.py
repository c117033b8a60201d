"""The review page in a real browser: Debian's Chromium, driven by Playwright (no download).

Decide by click and by key, reload, export decisions.csv, apply it, import it into a
fresh browser; and check that a run whose labels and paths are HTML runs none of it.

Set NOISYCLEAN_SCREENSHOT=docs/review.png to also screenshot the page of the whole
committed example (slow: it scores and trains on 1,500 images).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_MANIFEST, EXAMPLE_SIZE, SmallSet, rewrite_suspects
from test_review import (
    HOSTILE_ID,
    HOSTILE_LABELS,
    HOSTILE_PATH,
    build_run,
    hostile_run,
    page_data,
    small_run,
)
from typer.testing import CliRunner

from noisyclean.review import write_review

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
TOP = 12


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet, feature_cache: Path) -> Path:
    return small_run(tmp_path_factory, small_set, feature_cache)


def open_page(context: Any, path: Path) -> tuple[Any, list[str]]:
    """A page on ``path`` once its script has run; the list collects script errors."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def card(page: Any, card_id: str) -> Any:
    return page.locator(f'article.card[data-id="{card_id}"]')


def decisions_shown(page: Any, ids: list[str]) -> dict[str, tuple[str, str]]:
    """What each card shows: its decision and the verdict text ('' when undecided)."""
    shown = {}
    for i in ids:
        c = card(page, i)
        decision = c.get_attribute("data-decision") or ""
        if decision:
            shown[i] = (decision, c.locator(".verdict").inner_text())
    return shown


def expected_shown(expected: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {
        i: (d, f"relabel → {label}" if d == "relabel" else d) for i, (d, label) in expected.items()
    }


def test_decide_reload_export_apply_import(
    browser: Any, run: Path, small_set: SmallSet, tmp_path: Path
) -> None:
    from noisyclean.cli import app

    review = tmp_path / "review.html"
    write_review(run, review, top=TOP)
    data, _ = page_data(review.read_text())
    cards, classes = data["cards"], data["classes"]
    assert len(cards) == TOP
    ids = [c["id"] for c in cards]
    expected: dict[str, tuple[str, str]] = {}

    def expect(i: int, decision: str, new_label: str = "") -> None:
        # The page turns a relabel to the row's own label into a keep.
        if decision == "relabel" and new_label == cards[i]["label"]:
            decision, new_label = "keep", ""
        expected[ids[i]] = (decision, new_label)

    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page, errors = open_page(context, review)
    assert page.inner_text("#counter") == f"0 of {TOP} decided"
    assert [c.get_attribute("data-id") for c in page.locator("article.card").all()] == ids

    # By click: keep, relabel to the suggested label, relabel to any class, drop.
    card(page, ids[0]).get_by_role("button", name="Keep").click()
    expect(0, "keep")
    card(page, ids[1]).locator("button[data-act='relabel']").click()
    expect(1, "relabel", cards[1]["suggested"])
    other = next(
        j for j, c in enumerate(classes) if c not in (cards[2]["label"], cards[2]["suggested"])
    )
    card(page, ids[2]).locator("button[data-act='pick']").click()
    assert page.evaluate("document.activeElement.id") == "picker-input"
    # 10 classes or fewer: the picker lists them all before anything is typed.
    assert page.locator("#picker-list li .name").all_inner_texts() == classes
    page.locator(f"#picker-list li[data-index='{other}']").click()
    expect(2, "relabel", classes[other])
    assert page.locator("#picker").is_hidden()
    assert "on" in (card(page, ids[2]).locator("[data-act='pick']").get_attribute("class") or "")
    card(page, ids[3]).get_by_role("button", name="Drop").click()
    expect(3, "drop")
    assert page.inner_text("#counter") == f"4 of {TOP} decided"

    # By key: a decision moves to the next card; j/k and the arrows move without deciding.
    card(page, ids[4]).locator(".info").click()
    page.keyboard.press("r")
    expect(4, "relabel", cards[4]["suggested"])
    page.keyboard.press("d")
    expect(5, "drop")
    page.keyboard.press("2")
    expect(6, "relabel", classes[1])
    page.keyboard.press("j")
    page.keyboard.press("a")  # card 8
    page.keyboard.press("k")
    page.keyboard.press("u")  # clears card 8 again
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("a")  # card 10
    expect(10, "keep")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("d")  # card 9
    expect(9, "drop")
    assert card(page, ids[10]).get_attribute("class") == "card d-keep current"
    assert decisions_shown(page, ids) == expected_shown(expected)
    assert page.inner_text("#counter") == f"{len(expected)} of {TOP} decided"

    # Filters and sort change what is shown, not what is decided.
    label = cards[0]["label"]
    page.select_option("#filter-given", label)
    visible = [c.get_attribute("data-id") for c in page.locator("article.card:visible").all()]
    assert visible == [c["id"] for c in cards if c["label"] == label]
    page.select_option("#filter-given", "")
    page.select_option("#sort", "asc")
    assert page.locator("article.card").first.get_attribute("data-id") == ids[-1]
    page.select_option("#sort", "desc")
    assert page.inner_text("#counter") == f"{len(expected)} of {TOP} decided"

    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert decisions_shown(page, ids) == expected_shown(expected)
    assert page.inner_text("#counter") == f"{len(expected)} of {TOP} decided"

    exported = tmp_path / "decisions.csv"
    with page.expect_download() as download:
        page.click("#export")
    assert download.value.suggested_filename == "decisions.csv"
    download.value.save_as(exported)
    with exported.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "decision", "new_label"]
    assert {r["id"]: (r["decision"], r["new_label"]) for r in rows} == expected
    assert len(rows) == len(expected)  # undecided rows are left out: apply keeps them
    assert errors == []

    out = tmp_path / "clean.csv"
    result = CliRunner().invoke(
        app, ["apply", str(small_set.manifest), str(exported), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    with out.open(newline="") as fh:
        cleaned = list(csv.DictReader(fh))
    with (tmp_path / "clean.dropped.csv").open(newline="") as fh:
        dropped = list(csv.DictReader(fh))
    want, want_dropped = [], []
    for row in small_set.rows:
        decision, new_label = expected.get(row["id"], ("keep", ""))
        if decision == "drop":
            want_dropped.append(row)
        else:
            want.append({**row, "label": new_label if decision == "relabel" else row["label"]})
    assert cleaned == want and dropped == want_dropped
    assert len(small_set.rows) == len(cleaned) + len(dropped)
    context.close()

    # A fresh browser profile: nothing saved, until the exported file is imported.
    fresh = browser.new_context(viewport=VIEWPORT)
    page, errors = open_page(fresh, review)
    assert page.inner_text("#counter") == f"0 of {TOP} decided"
    page.set_input_files("#import", str(exported))
    page.wait_for_function(
        "n => document.getElementById('counter').textContent === n",
        arg=f"{len(expected)} of {TOP} decided",
    )
    assert decisions_shown(page, ids) == expected_shown(expected)
    assert f"Imported {len(expected)} decisions" in page.inner_text("#status")
    assert errors == []
    fresh.close()


#: Class names added to the small run's ten, for the picker to search among: "shirt" is in
#: "Shirt" (exact), three names that start with it, "T-shirt_top" (a word starts with it)
#: and two that merely contain it.
EXTRA_CLASSES = (
    "overshirt",
    "shirtdress",
    "Shirt collar",
    "sweatshirt",
    "shirtwaist",
    "Jade plant",
)
SPECIES = 1000


def many_class_run(run: Path, dest: Path) -> Path:
    """A copy of ``run`` with more than 1,000 classes: its ten, SPECIES names like
    "species 0042" and EXTRA_CLASSES. The rows keep their labels (all still classes)."""
    out = dest / "many-class-run"
    shutil.copytree(run, out)
    config = json.loads((run / "config.json").read_text())
    extra = [f"species {i:04d}" for i in range(SPECIES)] + list(EXTRA_CLASSES)
    classes = sorted({*config["classes"], *extra})
    config["classes"] = classes
    (out / "config.json").write_text(json.dumps(config))
    # The Parquet files repeat the classes in their metadata: keep them in step.
    for name in ("suspects.parquet", "embeddings.parquet"):
        table = pq.read_table(run / name)
        meta = dict(table.schema.metadata or {})
        meta[b"classes"] = json.dumps(classes).encode()
        pq.write_table(table.replace_schema_metadata(meta), out / name)
    frame = pq.read_table(out / "suspects.parquet").to_pandas()
    assert frame["label"].isin(classes).all()
    return out


def picker_names(page: Any) -> list[str]:
    return page.locator("#picker-list li .name").all_inner_texts()


def test_class_picker_with_many_classes(browser: Any, run: Path, tmp_path: Path) -> None:
    review = tmp_path / "review.html"
    write_review(many_class_run(run, tmp_path), review, top=TOP)
    data, _ = page_data(review.read_text())
    cards, classes = data["cards"], data["classes"]
    assert len(classes) == 10 + SPECIES + len(EXTRA_CLASSES)
    ids = [c["id"] for c in cards]

    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page, errors = open_page(context, review)
    assert f"{len(classes):,} classes: the digit keys start a class search" in page.inner_text(
        "#classkeys"
    )
    # The class list is embedded once: no card carries a menu of every class.
    assert page.locator("article.card select, article.card option, article.card li").count() == 0

    # "/" opens the picker on the current card; typing never fires a shortcut ("r" would
    # relabel, "t" reopen); prefix matches come first, case-insensitively.
    card(page, ids[0]).locator(".info").click()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "picker-input"
    assert len(picker_names(page)) == 10
    page.keyboard.type("shirt")
    assert picker_names(page) == [
        "Shirt",
        "Shirt collar",
        "shirtdress",
        "shirtwaist",
        "T-shirt_top",
        "overshirt",
        "sweatshirt",
    ]
    assert page.inner_text("#picker-note") == "7 matches"
    assert card(page, ids[0]).get_attribute("data-decision") == ""
    # At most 10 matches, however many there are.
    page.fill("#picker-input", "PECIES 09")
    assert picker_names(page) == [f"species {i:04d}" for i in range(900, 910)]
    assert page.inner_text("#picker-note") == "10 of 100 matches: type more"
    page.fill("#picker-input", "")
    page.keyboard.type("SHIRT")
    # The arrows move the highlight (wrapping around); Enter relabels and moves on.
    for key in ("ArrowDown", "ArrowDown", "ArrowUp", "ArrowUp", "ArrowUp", "ArrowDown"):
        page.keyboard.press(key)
    assert page.locator("#picker-list li[aria-selected='true'] .name").inner_text() == "Shirt"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.locator("#picker-list li[aria-selected='true'] .name").inner_text() == "shirtdress"
    page.keyboard.press("Enter")
    assert page.locator("#picker").is_hidden()
    assert card(page, ids[0]).get_attribute("data-decision") == "relabel"
    assert card(page, ids[0]).locator(".verdict").inner_text() == "relabel → shirtdress"
    assert "current" in (card(page, ids[1]).get_attribute("class") or "")

    # More than 10 classes: a digit starts a search instead of relabelling; Escape closes
    # the picker and the shortcuts work again at once.
    page.keyboard.press("7")
    assert page.input_value("#picker-input") == "7"
    assert all("7" in n for n in picker_names(page))
    page.keyboard.press("Escape")
    assert page.locator("#picker").is_hidden()
    assert card(page, ids[1]).get_attribute("data-decision") == ""
    page.keyboard.press("a")
    assert card(page, ids[1]).get_attribute("data-decision") == "keep"

    # By click: the card's button opens the picker ("jade" holds the keys j, a, d, e).
    card(page, ids[3]).locator("button[data-act='pick']").click()
    page.keyboard.type("jade")
    assert picker_names(page) == ["Jade plant"]
    page.locator("#picker-list li").first.click()
    assert card(page, ids[3]).locator(".verdict").inner_text() == "relabel → Jade plant"
    assert "current" in (card(page, ids[3]).get_attribute("class") or "")
    # A click outside closes an open picker without deciding.
    card(page, ids[4]).locator("button[data-act='pick']").click()
    page.keyboard.type("species")
    page.locator("header h1").click()
    page.wait_for_selector("#picker", state="hidden")
    assert card(page, ids[4]).get_attribute("data-decision") == ""
    expected = {
        ids[0]: ("relabel", "shirtdress"),
        ids[1]: ("keep", ""),
        ids[3]: ("relabel", "Jade plant"),
    }
    assert page.inner_text("#counter") == f"3 of {TOP} decided"

    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert card(page, ids[3]).locator(".verdict").inner_text() == "relabel → Jade plant"
    with page.expect_download() as download:
        page.click("#export")
    download.value.save_as(tmp_path / "decisions.csv")
    with (tmp_path / "decisions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["id"]: (r["decision"], r["new_label"]) for r in rows} == expected
    assert len(rows) == len(expected)
    assert errors == []
    context.close()


def test_hostile_data_runs_nothing(browser: Any, run: Path, tmp_path: Path) -> None:
    review = tmp_path / "review.html"
    write_review(hostile_run(run, tmp_path), review, top=1000)
    data, _ = page_data(review.read_text())
    first = data["cards"][0]
    classes = data["classes"]

    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    dialogs: list[str] = []
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(review.as_uri())
    page.wait_for_selector("body[data-ready='1']")

    c = page.locator("article.card").first
    assert c.locator(".id").inner_text() == HOSTILE_ID
    assert c.locator(".path").inner_text() == HOSTILE_PATH
    assert c.locator(".lab.given").inner_text() == first["label"]
    assert c.locator(".lab.sugg").inner_text() == first["suggested"]
    shown = set(page.locator(".lab").all_inner_texts())
    assert set(HOSTILE_LABELS) & shown, "the hostile labels are on the page, as text"
    options = page.locator("#filter-given option").all_inner_texts()
    assert any(o.startswith("<img src=x onerror=alert(1)>") for o in options) or any(
        o.startswith("</script>") for o in options
    )

    # Relabel the hostile id by key to a hostile class (the one CSV must quote, unless
    # that is its label), and another card by the picker to the one CSV must quote.
    quoted = 'a,"b" & <c>'
    target = quoted if first["label"] != quoted else HOSTILE_LABELS[0]
    index = classes.index(target)
    assert index <= 9 and target != first["label"]
    c.locator(".info").click()
    page.keyboard.press("0" if index == 9 else str(index + 1))
    assert c.locator(".verdict").inner_text() == f"relabel → {target}"
    other = next(x for x in data["cards"][1:] if x["label"] != quoted)
    card(page, other["id"]).locator("button[data-act='pick']").click()
    # The picker lists the hostile names as text, the match marked by text nodes only.
    page.keyboard.type("<")
    assert set(picker_names(page)) == {n for n in classes if "<" in n}
    assert page.locator("#picker img, #picker script").count() == 0
    page.keyboard.type("c>")
    assert picker_names(page) == [quoted]
    page.keyboard.press("Enter")
    assert card(page, other["id"]).locator(".verdict").inner_text() == f"relabel → {quoted}"
    with page.expect_download() as download:
        page.click("#export")
    download.value.save_as(tmp_path / "decisions.csv")
    with (tmp_path / "decisions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"id": HOSTILE_ID, "decision": "relabel", "new_label": target},
        {"id": other["id"], "decision": "relabel", "new_label": quoted},
    ]

    page.mouse.move(100, 300)
    page.wait_for_timeout(300)  # time for any injected onerror/onload to fire
    assert dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("img:not([src^='data:image/'])").count() == 0
    assert page.locator("svg, iframe, object, embed").count() == 0
    assert page.evaluate("document.scripts.length") == 3
    context.close()


def test_run_without_suspects(browser: Any, run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    frame = pq.read_table(run / "suspects.parquet").to_pandas()
    rewrite_suspects(
        frame.assign(is_suspect=False), run / "suspects.parquet", copy / "suspects.parquet"
    )
    write_review(copy, tmp_path / "review.html")
    context = browser.new_context(viewport=VIEWPORT)
    page, errors = open_page(context, tmp_path / "review.html")
    assert page.inner_text("#counter") == "0 of 0 decided"
    assert page.inner_text("#empty") == "This run has no suspects."
    page.keyboard.press("j")
    page.keyboard.press("a")
    page.keyboard.press("/")
    assert page.locator("#picker").is_hidden()
    assert errors == []
    context.close()


@pytest.mark.skipif(
    not os.environ.get("NOISYCLEAN_SCREENSHOT"), reason="set NOISYCLEAN_SCREENSHOT=path.png"
)
def test_screenshot(browser: Any, tmp_path: Path, feature_cache: Path) -> None:
    """The README's screenshot: the page of the whole committed example, a few cards decided."""
    shot = Path(os.environ["NOISYCLEAN_SCREENSHOT"])
    run = build_run(
        EXAMPLE_MANIFEST, tmp_path / "run", feature_cache, image_size=EXAMPLE_SIZE, fast=False
    )
    review = tmp_path / "review.html"
    summary = write_review(run, review)
    print(f"review page: {summary.cards} cards, {summary.size / 1e6:.2f} MB")
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page, errors = open_page(context, review)
    page.locator("article.card").first.locator(".info").click()
    for key in ("a", "r", "d"):
        page.keyboard.press(key)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot))
    assert errors == []
    context.close()
