"""The review page: self-contained, only the top suspects in rank order, duplicate groups
most urgent first, outliers most outlying first, thumbnails embedded once each, and a run's
labels, paths and ids rendered as data, never markup."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SmallSet, feature_config, rewrite_suspects
from typer.testing import CliRunner

from noisyclean.artifacts import ArtifactError, read_run_config, read_suspects, write_conf
from noisyclean.configs import ConfidenceConfig, TrainConfig
from noisyclean.duplicates import SCHEMA as DUPLICATES_SCHEMA
from noisyclean.errors import NoisyCleanError
from noisyclean.manifest import load_manifest
from noisyclean.pipeline import score_manifest, train_run
from noisyclean.review import (
    MEMBERS_SHOWN,
    _page,
    build_review,
    encode_thumbnail,
    script_json,
    write_review,
)

#: Labels and paths that would run script if the page ever treated data as markup.
HOSTILE_LABELS = (
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    'a,"b" & <c>',
    "<!--",
)
HOSTILE_PATH = "images/a\"b'c <img src=x onerror=alert(2)>.png"
HOSTILE_ID = 'id"><svg onload=alert(3)>'

_RUNS: dict[str, Path] = {}


def build_run(
    manifest: Path, out: Path, cache: Path, *, image_size: int = 64, fast: bool = True
) -> Path:
    """score + train on real images, as the CLI runs them; ``fast`` trains less (tests
    check the page, not the quality of the suspects)."""
    m = load_manifest(manifest)
    scored = score_manifest(
        m,
        features=feature_config(cache, image_size=image_size),
        config=ConfidenceConfig(folds=3, epochs=10) if fast else ConfidenceConfig(),
    )
    conf = out.parent / f"{out.name}-conf.parquet"
    write_conf(conf, scored.conf)
    train = TrainConfig(epochs=8, batch_size=64, device="cpu") if fast else TrainConfig()
    train_run(conf, out, config=train, cache_dir=cache)
    return out


def small_run(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet, cache: Path) -> Path:
    """One run of the 100-row small set per session, shared by the review test modules."""
    if "small" not in _RUNS:
        _RUNS["small"] = build_run(
            small_set.manifest, tmp_path_factory.mktemp("run") / "run", cache
        )
    return _RUNS["small"]


def hostile_run(run: Path, dest: Path) -> Path:
    """A copy of ``run`` whose classes, one path and one id are hostile strings; the
    images are copied, so every row but the renamed one still has its picture."""
    frame = pq.read_table(run / "suspects.parquet").to_pandas()
    config = json.loads((run / "config.json").read_text())
    src_root = Path(config["manifest_dir"])
    classes = sorted(config["classes"])
    rename = {
        c: (HOSTILE_LABELS[i] if i < len(HOSTILE_LABELS) else c) for i, c in enumerate(classes)
    }
    top = frame[frame["is_suspect"]].sort_values("rank")
    victim = str(top["id"].iloc[0])
    ids = {victim: HOSTILE_ID}

    def new_id(v: str) -> str:
        return ids.get(v, v)

    root = dest / "data"
    for path in frame["path"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / path, root / path)
    victim_path = str(frame.loc[frame["id"] == victim, "path"].iloc[0])
    (root / HOSTILE_PATH).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_root / victim_path, root / HOSTILE_PATH)

    frame.loc[frame["id"] == victim, "path"] = HOSTILE_PATH
    frame["id"] = frame["id"].map(new_id)
    for col in ("label", "suggested_label"):
        frame[col] = frame[col].map(lambda v: rename.get(v, v))
    for col in ("neighbours", "neighbours_suggested", "neighbours_given"):
        frame[col] = frame[col].map(lambda xs: None if xs is None else [new_id(x) for x in xs])
    out = dest / "run"
    shutil.copytree(run, out)
    rewrite_suspects(frame, run / "suspects.parquet", out / "suspects.parquet")
    if (run / "duplicates.parquet").is_file():  # its ids and labels, renamed alike
        dups = pq.read_table(run / "duplicates.parquet")
        groups = dups.to_pandas()
        groups["id"] = groups["id"].map(new_id)
        groups["label"] = groups["label"].map(lambda v: rename.get(v, v))
        table = pa.Table.from_pandas(groups, schema=DUPLICATES_SCHEMA, preserve_index=False)
        pq.write_table(
            table.replace_schema_metadata(dups.schema.metadata), out / "duplicates.parquet"
        )
    config.update(classes=sorted(rename.values()), manifest_dir=str(root))
    (out / "config.json").write_text(json.dumps(config))
    return out


#: suspects.parquet's outlier and duplicate columns (written by train since RUN_FORMAT 3).
CLEANUP_COLUMNS = ("outlier", "is_outlier", "suggestion", "duplicate_group", "conflict")


@dataclass(frozen=True)
class Cleanup:
    """A run with outliers and duplicate groups chosen by ``cleanup_run``.

    Attributes:
        run: the run directory.
        outliers: the flagged rows, most outlying first.
        groups: group number → (kind, member ids, the first member first).
        order: the groups in the Duplicates tab's order.
        targets: each group's relabel-all class (most common label, ties by class order).
        labels: every row's given label.
    """

    run: Path
    outliers: list[str]
    groups: dict[int, tuple[str, list[str]]]
    order: list[int]
    targets: dict[int, str]
    labels: dict[str, str]


def cleanup_run(run: Path, dest: Path) -> Cleanup:
    """A copy of ``run`` with outlier columns and duplicates.parquet set by hand, as
    ``train`` writes them: three outliers (one of them the top suspect, which leaves the
    Wrong labels tab), and six groups, one of each kind and size the tab orders by:

    - 0 leak (a train row, a test row), 1 conflict of 2 labels (a tie), 2 exact,
      3 conflict of 3 (labels X, Y, Y), 4 near of 2, 5 near of 3 (one similarity a bound);
    - so the tab's order is 3, 1 (conflict, larger first), 0, 2, 5, 4.

    The conflict groups' members come from the top suspects, so they are on the page.
    """
    frame = pq.read_table(run / "suspects.parquet").to_pandas()
    frame = frame.drop(columns=[c for c in CLEANUP_COLUMNS if c in frame.columns])
    config = json.loads((run / "config.json").read_text())
    classes = list(config["classes"])
    manifest = pd.read_csv(config["manifest"], dtype=str, keep_default_na=False)
    split_of = dict(zip(manifest["id"], manifest["split"], strict=True))
    labels = dict(zip(frame["id"], frame["label"], strict=True))
    ranked = list(frame[frame["is_suspect"]].sort_values("rank")["id"])
    others = sorted(set(frame["id"]) - set(ranked))
    outliers = [others[0], others[1], ranked[0]]
    scores = dict(zip(outliers, (5.0, 4.25, 3.5), strict=True))
    used = set(outliers)
    pool = ranked + others

    def take(label: str | None = None, other_than: str | None = None, split: str = "") -> str:
        for i in pool:
            if i in used or (label is not None and labels[i] != label):
                continue
            if (other_than is not None and labels[i] == other_than) or (
                split and split_of.get(i, "train") != split
            ):
                continue
            used.add(i)
            return i
        raise AssertionError(f"no row left for {label=} {other_than=} {split=}")

    a = take()
    b = take(other_than=labels[a])
    c = take()
    d = take(other_than=labels[c])
    e = take(label=labels[d])
    t = take(split="train")
    f = take()
    h = take()
    j = take()
    groups = {
        0: ("leak", [t, take(split="test")]),
        1: ("conflict", [a, b]),
        2: ("exact", [f, take(label=labels[f])]),
        3: ("conflict", [c, d, e]),
        4: ("near", [h, take(label=labels[h])]),
        5: ("near", [j, take(label=labels[j]), take(label=labels[j])]),
    }

    def target(ids: list[str]) -> str:
        counts = Counter(labels[i] for i in ids)
        return min(counts, key=lambda x: (-counts[x], classes.index(x)))

    group_of = {i: g for g, (_, ids) in groups.items() for i in ids}
    conflict = {i for _, (kind, ids) in groups.items() if kind == "conflict" for i in ids}
    ids = frame["id"]
    frame["is_suspect"] = frame["is_suspect"] | ids.isin(conflict)
    score = ids.map(lambda i: scores.get(i, 0.0)).astype(np.float32)
    score[ids == others[2]] = np.nan  # an unusable row: no score
    frame["outlier"] = score
    frame["is_outlier"] = ids.isin(scores)
    frame["suggestion"] = np.where(
        frame["is_outlier"], "drop", np.where(frame["is_suspect"], "relabel", None)
    )
    frame["duplicate_group"] = ids.map(group_of).astype("Int64")
    frame["conflict"] = ids.isin(conflict)
    out = dest / "cleanup-run"
    shutil.copytree(run, out)
    rewrite_suspects(frame, run / "suspects.parquet", out / "suspects.parquet")
    rows = [
        {
            "group": g,
            "id": i,
            "similarity": 1.0 if pos == 0 else 0.99 - 0.01 * pos,
            "label": labels[i],
            "kind": kind,
            "split": split_of.get(i, "train"),
            "measured": not (g == 5 and pos == 2),
            "conflict": kind == "conflict",
            "leak": kind == "leak",
            "exact": kind == "exact",
        }
        for g, (kind, members) in sorted(groups.items())
        for pos, i in enumerate(members)
    ]
    table = pa.Table.from_pylist(rows, schema=DUPLICATES_SCHEMA)
    meta = pq.read_schema(run / "suspects.parquet").metadata
    pq.write_table(table.replace_schema_metadata(meta), out / "duplicates.parquet")
    return Cleanup(
        run=out,
        outliers=outliers,
        groups=groups,
        order=[3, 1, 0, 2, 5, 4],
        targets={g: target(ids) for g, (_, ids) in groups.items()},
        labels=labels,
    )


def page_data(page: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON the page embeds: its data and its id → data-URI map."""

    def block(name: str) -> Any:
        found = re.search(
            rf'<script type="application/json" id="{name}">(.*?)</script>', page, re.S
        )
        assert found, name
        return json.loads(found[1])

    return block("nc-data"), block("nc-images")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet, feature_cache: Path) -> Path:
    return small_run(tmp_path_factory, small_set, feature_cache)


@pytest.fixture(scope="module")
def suspects(run: Path) -> pd.DataFrame:
    frame = pq.read_table(run / "suspects.parquet").to_pandas()
    ranked = frame[frame["is_suspect"]].sort_values("rank")
    assert len(ranked) > 5, "the small set should give more suspects than the tests' top"
    return ranked


def test_page_is_self_contained(run: Path) -> None:
    page = build_review(run)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    # Scripts: the two JSON blocks and the inline code, none with a src.
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert len(scripts) == 3
    assert all("src" not in s for s in scripts)
    assert "<link" not in page and "@import" not in page and "fetch(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_top_suspects_in_rank_order(run: Path, suspects: pd.DataFrame) -> None:
    data, _ = page_data(build_review(run, top=5))
    assert [c["id"] for c in data["cards"]] == list(suspects["id"][:5])
    assert [c["rank"] for c in data["cards"]] == sorted(c["rank"] for c in data["cards"])
    data, _ = page_data(build_review(run, top=10_000))
    assert [c["id"] for c in data["cards"]] == list(suspects["id"])
    assert data["suspects"] == len(suspects)
    card, row = data["cards"][0], suspects.iloc[0]
    assert (card["label"], card["suggested"], card["path"]) == (
        row["label"],
        row["suggested_label"],
        row["path"],
    )
    assert card["suspicion"] == pytest.approx(row["suspicion"], abs=1e-4)


def test_page_carries_the_noise_estimate(run: Path) -> None:
    page = build_review(run)
    data, _ = page_data(page)
    noise = json.loads((run / "config.json").read_text())["noise"]
    assert data["noise"] == noise and noise["noise_low"] <= noise["noise"]
    # The page's script shows it in the Wrong labels tab's line.
    assert "estimated wrong labels " in page and "expected precision " in page


def test_each_card_has_neighbours_of_both_classes(run: Path, suspects: pd.DataFrame) -> None:
    data, images = page_data(build_review(run, neighbours=3))
    frame = pq.read_table(run / "suspects.parquet").to_pandas().set_index("id")
    for card in data["cards"]:
        assert card["id"] in images
        assert 1 <= len(card["given"]) <= 3
        assert all(frame.loc[n, "label"] == card["label"] for n in card["given"])
        assert all(frame.loc[n, "label"] == card["suggested"] for n in card["sugg"])
        for n in card["given"] + card["sugg"]:
            assert n in images
            assert n in data["rows"] or n in {c["id"] for c in data["cards"]}


def test_thumbnails_are_embedded_once_each(run: Path) -> None:
    page = build_review(run)
    data, images = page_data(page)
    shown = Counter(n for c in data["cards"] for n in (c["id"], *c["given"], *c["sugg"]))
    assert max(shown.values()) > 1, "some neighbour should appear on several cards"
    members = {m["id"] for g in data["groups"] for m in g["members"][:MEMBERS_SHOWN]}
    assert set(images) == set(shown) | members | {c["id"] for c in data["outliers"]}
    assert len(re.findall(r"data:image/\w+;base64,", page)) == len(images)
    assert all(
        re.fullmatch(r"data:image/(webp|jpeg);base64,[A-Za-z0-9+/=]+", u) for u in images.values()
    )


def test_thumbnails_are_downscaled(tmp_path: Path) -> None:
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGBA", (800, 400), (200, 30, 30, 128)).save(big)
    uri = encode_thumbnail(big, 64)
    assert uri is not None
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (64, 32)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert encode_thumbnail(tmp_path / "bad.png", 64) is None
    assert encode_thumbnail(tmp_path / "none.png", 64) is None


def test_missing_image_gets_a_placeholder(run: Path, tmp_path: Path) -> None:
    frame = pq.read_table(run / "suspects.parquet").to_pandas()
    first = frame[frame["is_suspect"]].sort_values("rank")["id"].iloc[0]
    frame.loc[frame["id"] == first, "path"] = "images/not-there.png"
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rewrite_suspects(frame, run / "suspects.parquet", copy / "suspects.parquet")
    summary = write_review(copy, tmp_path / "review.html", top=3)
    data, images = page_data(summary.output.read_text())
    assert data["cards"][0]["id"] == first and first not in images
    assert summary.missing_images == 1 and summary.cards == 3
    assert "no image" in summary.output.read_text()


def test_write_review_summary(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "review.html"
    summary = write_review(run, out, top=4)
    assert summary.cards == 4 and summary.size == out.stat().st_size
    assert summary.run_id == json.loads((run / "config.json").read_text())["run_id"]
    assert [p.name for p in out.parent.iterdir()] == ["review.html"]  # no temp file left


@pytest.mark.parametrize("missing", ["config.json", "suspects.parquet"])
def test_incomplete_run_is_a_one_line_error(run: Path, tmp_path: Path, missing: str) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / missing).unlink()
    with pytest.raises(ArtifactError, match=missing) as err:
        build_review(copy)
    assert "\n" not in str(err.value)
    with pytest.raises(NoisyCleanError, match="no such run directory"):
        build_review(tmp_path / "nope")


def test_script_json_escapes_markup() -> None:
    value = {"k": "</script><!-- & \u2028\u2029 <b>"}
    text = script_json(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


def test_hostile_data_is_never_markup(run: Path, tmp_path: Path) -> None:
    page = build_review(hostile_run(run, tmp_path), top=10_000)
    data, images = page_data(page)
    for needle in (*HOSTILE_LABELS, HOSTILE_PATH, HOSTILE_ID, "<svg", "<img"):
        assert needle not in page, needle
    assert not re.search(r"<[a-z][^>]*\son\w+\s*=", page, re.I), "an inline event handler"
    assert page.count("</script>") == 3
    # The data itself survives: it is escaped, not stripped.
    labels = {c["label"] for c in data["cards"]} | {c["suggested"] for c in data["cards"]}
    assert set(HOSTILE_LABELS) & labels
    assert data["cards"][0]["id"] == HOSTILE_ID and data["cards"][0]["path"] == HOSTILE_PATH
    assert HOSTILE_ID in images
    # The page's script never parses strings as HTML.
    script = page.rsplit("<script>", 1)[1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_review_cli(run: Path, tmp_path: Path) -> None:
    from noisyclean.cli import app

    out = tmp_path / "review.html"
    result = CliRunner().invoke(app, ["review", str(run), "-o", str(out), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "3 of" in result.output and "MB" in result.output and out.is_file()
    result = CliRunner().invoke(app, ["review", str(tmp_path / "nope"), "-o", str(out)])
    assert result.exit_code == 1
    assert "no such run directory" in result.output and "Traceback" not in result.output


def test_output_folder_is_a_one_line_error(run: Path, tmp_path: Path) -> None:
    with pytest.raises(NoisyCleanError, match="is a folder") as err:
        write_review(run, tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="top"):
        build_review(run, top=0)


@pytest.fixture(scope="module")
def cleanup(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Cleanup:
    return cleanup_run(run, tmp_path_factory.mktemp("cleanup"))


def test_tabs_content_and_order(cleanup: Cleanup, tmp_path: Path) -> None:
    frame = pq.read_table(cleanup.run / "suspects.parquet").to_pandas()
    classes = json.loads((cleanup.run / "config.json").read_text())["classes"]
    data, images = page_data(build_review(cleanup.run, top=10_000))

    # Wrong labels: the suspects by rank, outliers left out (the top suspect is one).
    wrong = frame[frame["is_suspect"] & ~frame["is_outlier"]].sort_values("rank")
    assert [c["id"] for c in data["cards"]] == list(wrong["id"])
    assert data["suspects"] == len(wrong)
    assert not {c["id"] for c in data["cards"]} & set(cleanup.outliers)
    # A row of a conflict group carries the other labels of its copies, in class order.
    member_of = {i: g for g, (_, ids) in cleanup.groups.items() for i in ids}
    for card in data["cards"]:
        g = member_of.get(card["id"])
        if g is None or cleanup.groups[g][0] != "conflict":
            assert "conflict" not in card, card["id"]
            continue
        others = {cleanup.labels[i] for i in cleanup.groups[g][1]} - {card["label"]}
        assert card["conflict"] == sorted(others, key=classes.index)
    assert sum("conflict" in c for c in data["cards"]) == 5

    # Duplicates: conflict, leak, exact, near; larger groups first within a kind.
    assert [g["group"] for g in data["groups"]] == cleanup.order
    assert data["n_groups"] == 6 and data["has_duplicates"]
    assert data["group_kinds"] == {"conflict": 2, "leak": 1, "exact": 1, "near": 2}
    for g in data["groups"]:
        kind, ids = cleanup.groups[g["group"]]
        assert g["kind"] == kind and g["flags"] == ([] if kind == "near" else [kind])
        assert [m["id"] for m in g["members"]] == ids
        assert [m["label"] for m in g["members"]] == [cleanup.labels[i] for i in ids]
        assert g["members"][0]["similarity"] == 1.0
        assert g["target"] == cleanup.targets[g["group"]]
        assert all(m["id"] in images for m in g["members"])
    leak = next(g for g in data["groups"] if g["kind"] == "leak")
    assert [m["split"] for m in leak["members"]] == ["train", "test"]
    assert [m["measured"] for m in data["groups"][4]["members"]] == [True, True, False]
    # Relabel all: the most common label; a tie goes to the class that comes first.
    x, y, z = cleanup.groups[3][1]
    assert cleanup.targets[3] == cleanup.labels[y] == cleanup.labels[z] != cleanup.labels[x]
    tie = {cleanup.labels[i] for i in cleanup.groups[1][1]}
    assert cleanup.targets[1] == min(tie, key=classes.index) and len(tie) == 2

    # Outliers: the flagged rows, most outlying first, each suggesting drop.
    assert [c["id"] for c in data["outliers"]] == cleanup.outliers
    assert [c["outlier"] for c in data["outliers"]] == [5.0, 4.25, 3.5]
    assert {c["suggestion"] for c in data["outliers"]} == {"drop"}
    assert data["n_outliers"] == 3 and data["has_outliers"]
    assert all(
        c["id"] in images and c["label"] == cleanup.labels[c["id"]] for c in data["outliers"]
    )

    # `top` caps each tab; the counts stay the run's.
    summary = write_review(cleanup.run, tmp_path / "review.html", top=2)
    data, _ = page_data(summary.output.read_text())
    assert [g["group"] for g in data["groups"]] == cleanup.order[:2]
    assert [c["id"] for c in data["outliers"]] == cleanup.outliers[:2]
    assert len(data["cards"]) == 2 and data["suspects"] == len(wrong)
    assert (summary.cards, summary.suspects) == (2, len(wrong))
    assert (summary.groups, summary.duplicate_groups) == (2, 6)
    assert (summary.outlier_cards, summary.outliers) == (2, 3)


def strip_cleanup(run: Path) -> tuple[Any, pa.Table]:
    """A run's config and its suspects table as a run written before outliers and
    duplicates were found: without their columns (the run's readers may refuse such a
    run by its format; the page itself must not need them)."""
    config = read_run_config(run)
    table = read_suspects(run, config)
    return config, table.drop_columns([c for c in CLEANUP_COLUMNS if c in table.column_names])


def old_run_page(run: Path, *, top: int = 500, duplicates: pa.Table | None = None) -> str:
    config, table = strip_cleanup(run)
    return _page(config, table, duplicates, top=top, thumb_size=48, neighbours=2).html


def test_old_run_still_renders(cleanup: Cleanup) -> None:
    page = old_run_page(cleanup.run)
    data, images = page_data(page)
    frame = pq.read_table(cleanup.run / "suspects.parquet").to_pandas()
    # No is_outlier column: every suspect is on the Wrong labels tab, without badges.
    ranked = frame[frame["is_suspect"]].sort_values("rank")
    assert [c["id"] for c in data["cards"]] == list(ranked["id"])
    assert not any("conflict" in c for c in data["cards"])
    assert (data["has_outliers"], data["n_outliers"], data["outliers"]) == (False, 0, [])
    assert (data["has_duplicates"], data["n_groups"], data["groups"]) == (False, 0, [])
    assert set(images) == {n for c in data["cards"] for n in (c["id"], *c["given"], *c["sugg"])}
    # A run whose duplicates.parquet has no rows: the file is there, the tab is empty.
    empty = pa.Table.from_pylist([], schema=DUPLICATES_SCHEMA)
    data, _ = page_data(old_run_page(cleanup.run, duplicates=empty))
    assert (data["has_duplicates"], data["n_groups"], data["groups"]) == (True, 0, [])


def test_hostile_data_in_groups_and_outliers(run: Path, tmp_path: Path) -> None:
    hostile = cleanup_run(hostile_run(run, tmp_path / "hostile"), tmp_path)
    page = build_review(hostile.run, top=10_000)
    data, images = page_data(page)
    for needle in (*HOSTILE_LABELS, HOSTILE_PATH, HOSTILE_ID, "<svg", "<img"):
        assert needle not in page, needle
    assert not re.search(r"<[a-z][^>]*\son\w+\s*=", page, re.I), "an inline event handler"
    assert page.count("</script>") == 3
    # The top suspect, renamed HOSTILE_ID, is an outlier: its id and path survive as data.
    outlier = next(c for c in data["outliers"] if c["id"] == HOSTILE_ID)
    assert outlier["path"] == HOSTILE_PATH and HOSTILE_ID in images
    members = {m["label"] for g in data["groups"] for m in g["members"]}
    badges = {x for c in data["cards"] for x in c.get("conflict", [])}
    targets = {g["target"] for g in data["groups"]}
    assert set(HOSTILE_LABELS) & members
    assert set(HOSTILE_LABELS) & (badges | targets | {c["label"] for c in data["outliers"]})
