"""The review page: self-contained, only the top suspects in rank order, thumbnails
embedded once each, and a run's labels, paths and ids rendered as data, never markup."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SmallSet, feature_config, rewrite_suspects
from typer.testing import CliRunner

from noisyclean.artifacts import ArtifactError, write_conf
from noisyclean.configs import ConfidenceConfig, TrainConfig
from noisyclean.errors import NoisyCleanError
from noisyclean.manifest import load_manifest
from noisyclean.pipeline import score_manifest, train_run
from noisyclean.review import build_review, encode_thumbnail, script_json, write_review

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
    config.update(classes=sorted(rename.values()), manifest_dir=str(root))
    (out / "config.json").write_text(json.dumps(config))
    return out


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
    assert set(images) == set(shown)
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
