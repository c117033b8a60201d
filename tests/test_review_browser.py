"""The review page in a real browser: Debian's Chromium, driven by Playwright (no download).

Decide by click and by key, reload, export decisions.csv, apply it, import it into a
fresh browser; drive the Duplicates and Outliers tabs, group actions, bulk actions and
their undo; and check that a run whose labels and paths are HTML runs none of it.

Set NOISYCLEAN_SCREENSHOT=docs/review.png to also screenshot the page of the whole
committed example (slow: it scores and trains on 1,500 images).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_MANIFEST, SmallSet, rewrite_suspects
from test_review import (
    HOSTILE_ID,
    HOSTILE_LABELS,
    HOSTILE_PATH,
    build_run,
    cleanup_run,
    hostile_run,
    old_run_page,
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


def group_card(page: Any, group: int) -> Any:
    return page.locator(f'article.gcard[data-group="{group}"]')


def member_decision(page: Any, group: int, row: str) -> str:
    return (
        group_card(page, group)
        .locator(f'figure.member[data-id="{row}"]')
        .get_attribute("data-decision")
    )


def expected_shown(expected: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {
        i: (d, f"relabel → {label}" if d == "relabel" else d) for i, (d, label) in expected.items()
    }


def apply_and_check(
    small_set: SmallSet, decisions: Path, expected: dict[str, tuple[str, str]], out: Path
) -> None:
    """``noisyclean apply`` the exported decisions, then check every row of the result:
    relabelled as decided, dropped rows in the sidecar, the rest unchanged, none lost."""
    from noisyclean.cli import app

    result = CliRunner().invoke(
        app, ["apply", str(small_set.manifest), str(decisions), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    with out.open(newline="") as fh:
        cleaned = list(csv.DictReader(fh))
    with out.with_name(f"{out.stem}.dropped.csv").open(newline="") as fh:
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


def test_decide_reload_export_apply_import(
    browser: Any, run: Path, small_set: SmallSet, tmp_path: Path
) -> None:
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
    noise = data["noise"]
    info = page.inner_text("#runinfo")
    assert f"estimated wrong labels {100 * noise['noise']:.1f}%" in info
    assert f"expected precision {noise['expected_precision']:.2f}" in info

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

    apply_and_check(small_set, exported, expected, tmp_path / "clean.csv")
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
    # At the README's image size: the duplicate threshold is calibrated for 112 px.
    run = build_run(EXAMPLE_MANIFEST, tmp_path / "run", feature_cache, image_size=112, fast=False)
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


def export_decisions(page: Any, dest: Path) -> list[dict[str, str]]:
    with page.expect_download() as download:
        page.click("#export")
    download.value.save_as(dest)
    with dest.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.timeout(300)
def test_tabs_group_and_bulk_actions_apply(
    browser: Any, run: Path, small_set: SmallSet, tmp_path: Path
) -> None:
    cl = cleanup_run(run, tmp_path)
    review = tmp_path / "review.html"
    write_review(cl.run, review, top=TOP)
    data, _ = page_data(review.read_text())
    cards, classes, groups = data["cards"], data["classes"], data["groups"]
    ids = [c["id"] for c in cards]
    expected: dict[str, tuple[str, str]] = {}

    def expect(row: str, decision: str, new_label: str = "") -> None:
        # The page turns a relabel to the row's own label into a keep.
        if decision == "relabel" and new_label == cl.labels[row]:
            decision, new_label = "keep", ""
        expected[row] = (decision, new_label)

    def check_cards() -> None:
        shown = {i: v for i, v in expected.items() if i in ids}
        assert decisions_shown(page, ids) == expected_shown(shown)

    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page, errors = open_page(context, review)
    # Three tabs, each with the run's count; the page opens on Wrong labels.
    assert page.inner_text("#n-labels") == str(data["suspects"])
    assert page.inner_text("#n-dups") == "6" and page.inner_text("#n-outliers") == "3"
    assert page.get_attribute("#tab-labels", "aria-selected") == "true"
    assert [c.get_attribute("data-id") for c in page.locator("article.card").all()] == ids
    assert not set(ids) & set(cl.outliers), "outliers are on their own tab"
    for c in cards:
        badge = card(page, c["id"]).locator(".badge.conflict")
        if c.get("conflict"):
            copies = "copy" if len(c["conflict"]) == 1 else "copies"
            assert badge.inner_text() == f"conflict: {copies} labelled {', '.join(c['conflict'])}"
        else:
            assert badge.count() == 0
    assert page.locator(".badge.conflict").count() >= 2

    # z undoes the last decision, as the Undo button does.
    card(page, ids[-1]).locator(".info").click()
    page.keyboard.press("a")
    assert card(page, ids[-1]).get_attribute("data-decision") == "keep"
    page.keyboard.press("z")
    assert card(page, ids[-1]).get_attribute("data-decision") == ""

    # Bulk actions act on the undecided cards shown: the tab and its filters.
    label = Counter(c["label"] for c in cards).most_common(1)[0][0]
    shown = [c for c in cards if c["label"] == label]
    assert len(shown) >= 2
    card(page, shown[0]["id"]).get_by_role("button", name="Drop").click()
    expect(shown[0]["id"], "drop")
    page.select_option("#filter-given", label)
    assert [c.get_attribute("data-id") for c in page.locator("article.card:visible").all()] == [
        c["id"] for c in shown
    ]
    accept = page.locator("#bulk-accept")
    assert accept.inner_text() == f"Accept shown suggestions ({len(shown) - 1})"
    accept.click()
    for c in shown[1:]:
        assert card(page, c["id"]).locator(".verdict").inner_text() == f"relabel → {c['suggested']}"
    assert card(page, shown[0]["id"]).get_attribute("data-decision") == "drop"
    # Undo restores exactly the rows the bulk action changed.
    page.click("#undo")
    for c in shown[1:]:
        assert card(page, c["id"]).get_attribute("data-decision") == ""
    assert card(page, shown[0]["id"]).get_attribute("data-decision") == "drop"
    assert "Undid the bulk action" in page.inner_text("#status")
    assert page.locator("#bulk-keep").inner_text() == f"Keep all shown ({len(shown) - 1})"
    page.click("#bulk-keep")
    for c in shown[1:]:
        expect(c["id"], "keep")
    assert accept.is_disabled() and page.locator("#bulk-keep").is_disabled()
    page.select_option("#filter-given", "")
    check_cards()
    assert page.inner_text("#counter") == f"{len(expected)} of {TOP} decided"

    # Duplicates: conflict groups first, larger first within a kind.
    page.click("#tab-dups")
    assert page.locator("article.card:visible").count() == 0
    gcards = page.locator("article.gcard")
    assert [g.get_attribute("data-group") for g in gcards.all()] == [str(g) for g in cl.order]
    assert [g.locator(".kind").text_content() for g in gcards.all()] == [
        cl.groups[g][0] for g in cl.order
    ]
    members = [m["id"] for g in groups for m in g["members"]]
    decided = sum(m in expected for m in members)
    assert page.inner_text("#counter") == f"{decided} of {len(members)} decided"
    # Relabel all, to the most common label: members that carry it are kept.
    group_card(page, 3).locator("button[data-act='relabel-all']").click()
    for row in cl.groups[3][1]:
        expect(row, "relabel", cl.targets[3])
        assert member_decision(page, 3, row) == expected[row][0]
    assert {member_decision(page, 3, row) for row in cl.groups[3][1]} == {"keep", "relabel"}
    # Relabel all to any class, by the picker.
    other = next(c for c in classes if c not in {cl.labels[r] for r in cl.groups[1][1]})
    group_card(page, 1).locator("button[data-act='pick']").click()
    page.keyboard.type(other)
    page.keyboard.press("Enter")
    assert page.locator("#picker").is_hidden()
    for row in cl.groups[1][1]:
        expect(row, "relabel", other)
        assert member_decision(page, 1, row) == "relabel"
    pick = group_card(page, 1).locator("button[data-act='pick']")
    assert "on" in (pick.get_attribute("class") or "")
    # Keep one: the member clicked (here the test row of the leak), or the first.
    first, second = cl.groups[0][1]
    group_card(page, 0).locator(f'figure.member[data-id="{second}"] button').click()
    expect(first, "drop")
    expect(second, "keep")
    group_card(page, 2).locator("button[data-act='keep-one']").click()
    expect(cl.groups[2][1][0], "keep")
    expect(cl.groups[2][1][1], "drop")
    assert group_card(page, 2).locator(".verdict").inner_text() == "keep 1 · drop 1"
    # Drop all, then undo it (by key): each member's earlier decision comes back.
    before = {row: member_decision(page, 5, row) for row in cl.groups[5][1]}
    group_card(page, 5).locator("button[data-act='drop-all']").click()
    assert {member_decision(page, 5, row) for row in cl.groups[5][1]} == {"drop"}
    page.keyboard.press("z")
    assert {row: member_decision(page, 5, row) for row in cl.groups[5][1]} == before
    # Bulk on this tab: keep the first member of each undecided group shown.
    pending = [g for g in cl.order if not any(r in expected for r in cl.groups[g][1])]
    assert pending, "some group should be left undecided"
    assert accept.inner_text() == f"Keep one of each shown group ({len(pending)})"
    accept.click()
    for g in pending:
        for pos, row in enumerate(cl.groups[g][1]):
            expect(row, "keep" if pos == 0 else "drop")
            assert member_decision(page, g, row) == expected[row][0]

    # Outliers: most outlying first; drop, keep (by key), then drop the rest in bulk.
    page.click("#tab-outliers")
    ocards = page.locator("article.ocard")
    assert [o.get_attribute("data-id") for o in ocards.all()] == cl.outliers
    assert page.locator("#filter-sugg").is_disabled()
    ocards.nth(0).get_by_role("button", name="Drop").click()
    expect(cl.outliers[0], "drop")
    ocards.nth(1).locator(".info").click()
    page.keyboard.press("a")
    expect(cl.outliers[1], "keep")
    assert "current" in (ocards.nth(2).get_attribute("class") or "")
    assert accept.inner_text() == "Drop shown outliers (1)"
    accept.click()
    expect(cl.outliers[2], "drop")
    assert [o.get_attribute("data-decision") for o in ocards.all()] == [
        expected[o][0] for o in cl.outliers
    ]
    assert page.inner_text("#counter") == "3 of 3 decided"

    # Back on Wrong labels, the group actions show on the cards of their rows.
    page.click("#tab-labels")
    check_cards()
    assert any(r in ids for g in (1, 3) for r in cl.groups[g][1])
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    check_cards()
    page.click("#tab-dups")
    for g in cl.order:
        for row in cl.groups[g][1]:
            # A group decided in part on Wrong labels leaves its other members undecided.
            assert member_decision(page, g, row) == expected.get(row, ("", ""))[0]

    # The export: one line per decided row, whichever tab decided it.
    rows = export_decisions(page, tmp_path / "decisions.csv")
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["id"]: (r["decision"], r["new_label"]) for r in rows} == expected
    assert errors == []
    context.close()

    apply_and_check(small_set, tmp_path / "decisions.csv", expected, tmp_path / "clean.csv")


@pytest.mark.timeout(120)
def test_old_run_has_empty_tabs(browser: Any, run: Path, tmp_path: Path) -> None:
    review = tmp_path / "review.html"
    review.write_text(old_run_page(run, top=TOP))
    context = browser.new_context(viewport=VIEWPORT)
    page, errors = open_page(context, review)
    assert page.inner_text("#n-dups") == "0" and page.inner_text("#n-outliers") == "0"
    assert page.locator("article.card").count() == TOP
    page.click("#tab-dups")
    assert "no duplicates.parquet" in page.inner_text("#empty")
    assert page.inner_text("#counter") == "0 of 0 decided"
    assert page.locator("#bulk-accept").is_disabled()
    page.keyboard.press("j")
    page.keyboard.press("a")
    page.click("#tab-outliers")
    assert "no outlier scores" in page.inner_text("#empty")
    page.keyboard.press("d")
    page.click("#tab-labels")
    assert page.locator("#empty").is_hidden()
    assert page.inner_text("#counter") == f"0 of {TOP} decided"
    assert errors == []
    context.close()


@pytest.mark.timeout(120)
def test_hostile_groups_and_outliers_run_nothing(browser: Any, run: Path, tmp_path: Path) -> None:
    hostile = cleanup_run(hostile_run(run, tmp_path / "hostile"), tmp_path)
    review = tmp_path / "review.html"
    write_review(hostile.run, review, top=1000)
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    dialogs: list[str] = []
    context.on("page", lambda p: p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss())))
    page, errors = open_page(context, review)  # the handler is on before the page loads
    texts: set[str] = set()
    page.click("#tab-outliers")
    assert page.locator("article.ocard .id").all_inner_texts().count(HOSTILE_ID) == 1
    assert HOSTILE_PATH in page.locator("article.ocard .path").all_inner_texts()
    texts |= set(page.locator("article.ocard .lab").all_inner_texts())
    page.click("#tab-dups")
    texts |= set(page.locator("article.gcard .lab").all_inner_texts())
    # A group action on a hostile label, exported as CSV and read back as it was.
    g = hostile.order[0]
    group_card(page, g).locator("button[data-act='relabel-all']").click()
    page.click("#tab-labels")
    texts |= set(page.locator(".badge.conflict").all_inner_texts())
    assert set(HOSTILE_LABELS) & texts
    rows = export_decisions(page, tmp_path / "decisions.csv")
    target = hostile.targets[g]
    assert {r["id"]: r["new_label"] for r in rows} == {
        r: ("" if hostile.labels[r] == target else target) for r in hostile.groups[g][1]
    }
    page.mouse.move(100, 300)
    page.wait_for_timeout(300)  # time for any injected onerror/onload to fire
    assert dialogs == [] and errors == []
    assert page.locator("img:not([src^='data:image/'])").count() == 0
    assert page.locator("svg, iframe, object, embed").count() == 0
    assert page.evaluate("document.scripts.length") == 3
    context.close()
