"""`noisyclean train`'s duplicates and outliers, and `noisyclean run`: the whole loop in one
folder, stages skipped when unchanged, an interrupted run finished, `--previous` after
`apply` — through the CLI on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SmallSet, model_args, write_csv
from PIL import Image, ImageOps
from typer.testing import CliRunner

from noisyclean.artifacts import RUN_FILES, read_duplicates, read_run_config
from noisyclean.cli import app
from noisyclean.duplicates import MATCH_THRESHOLD
from noisyclean.duplicates import SCHEMA as DUPLICATES_SCHEMA
from noisyclean.loop import OUTPUTS, RECORD, STAGES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

runner = CliRunner()
#: Pictures of nothing in Fashion-MNIST, labelled as garments.
N_OUTLIERS = 3
#: The loop's outlier threshold: low, for a set of 100 rows (see the test).
OUTLIER_THRESHOLD = 0.8


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet) -> Path:
    """The small set plus a byte-identical copy of one image under another label (an
    ``exact`` ``conflict``), a cropped, enlarged, mirrored and JPEG re-encoded copy of
    another under another label (a ``conflict`` only the pixel check finds), and a few
    pictures of nothing (bright stripes and checkers)."""
    root = tmp_path_factory.mktemp("dirty")
    shutil.copytree(small_set.root / "images", root / "images")
    rows = [dict(r) for r in small_set.rows]
    original = next(r for r in rows if r["split"] == "train")
    other = next(r["label"] for r in rows if r["label"] != original["label"])
    shutil.copyfile(root / original["path"], root / "images" / "copy.png")
    rows.append({**original, "id": "copy", "path": "images/copy.png", "label": other})
    second = [r for r in rows if r["split"] == "train"][1]
    with Image.open(root / second["path"]) as im:
        w, h = im.size
        cropped = im.convert("L").crop((2, 1, w, h - 2)).resize((2 * w, 2 * h))
        cropped = ImageOps.mirror(cropped)
        cropped.save(root / "images" / "crop.jpg", quality=75)
    relabel = next(r["label"] for r in rows if r["label"] != second["label"])
    rows.append({**second, "id": "crop", "path": "images/crop.jpg", "label": relabel})
    rng = np.random.default_rng(0)
    for i in range(N_OUTLIERS):
        yy, xx = np.mgrid[0:28, 0:28]
        pattern = ((xx // (2 + i) + yy // (3 + i)) % 2) * 255
        colour = rng.integers(0, 256, size=3)
        pixels = (pattern[..., None] * colour / 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(root / "images" / f"odd-{i}.png")
        rows.append(
            {
                **original,
                "id": f"odd-{i}",
                "path": f"images/odd-{i}.png",
                "label": rows[i * 7]["label"],
                "true_label": "",
            }
        )
    write_csv(root / "manifest.csv", rows)
    return root


def _model_args(cache: Path) -> list[str]:
    return [*model_args(cache), "--folds", "3"]


def _run(manifest: Path, out: Path, cache: Path, *extra: str) -> str:
    result = runner.invoke(
        app,
        [
            "run",
            str(manifest),
            "-o",
            str(out),
            *_model_args(cache),
            "--train-epochs",
            "2",
            "--embedding-dim",
            "16",
            "--top",
            "20",
            "--outlier-threshold",
            str(OUTLIER_THRESHOLD),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _ran(output: str) -> list[str]:
    """The stages a run's output says it ran (the others it says it skipped)."""
    skipped = [s for s in STAGES if f"{s}: unchanged since the last run, skipped" in output]
    return [s for s in STAGES if s not in skipped]


@pytest.fixture(scope="module")
def loop(dirty: Path, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loop") / "out"
    text = _run(dirty / "manifest.csv", out, feature_cache)
    assert _ran(text) == list(STAGES)
    assert f"review page: {(out / 'review.html').resolve().as_uri()}" in text
    return out


def test_train_writes_duplicates_and_outliers(loop: Path) -> None:
    config = read_run_config(loop)
    dups = read_duplicates(loop, config)
    assert dups.schema.names == DUPLICATES_SCHEMA.names
    frame = dups.to_pandas()
    copy_group = frame.loc[frame["id"] == "copy", "group"].iloc[0]
    members = frame[frame["group"] == copy_group]
    assert len(members) >= 2 and members["exact"].all() and members["conflict"].all()
    assert members["kind"].eq("conflict").all()
    assert members["label"].nunique() == 2
    crop_group = frame.loc[frame["id"] == "crop", "group"].iloc[0]
    cropped = frame[frame["group"] == crop_group]
    assert cropped["conflict"].all() and not cropped["exact"].any()
    assert config.duplicates["checked_pairs"] > 0 and config.duplicates["unread_images"] == 0
    assert config.duplicates["threshold"] == MATCH_THRESHOLD

    sus = pd.read_parquet(loop / "suspects.parquet")
    in_group = sus[sus["id"].isin(members["id"])]
    assert in_group["conflict"].all() and in_group["is_suspect"].all()
    assert (in_group["duplicate_group"] == copy_group).all()
    assert sus.loc[~sus["id"].isin(frame["id"]), "duplicate_group"].isna().all()

    odd = sus[sus["id"].str.startswith("odd-")]
    # On 100 rows at 64 px the pictures of nothing rank high, not beyond the default
    # threshold (5): the run uses --outlier-threshold OUTLIER_THRESHOLD.
    in_set = sus.drop(odd.index)["outlier"]
    assert (odd["outlier"] > in_set.quantile(0.75)).all(), odd[["id", "outlier"]]
    assert (sus["is_outlier"] == (sus["outlier"] > OUTLIER_THRESHOLD)).all()
    assert odd["is_outlier"].all() and (odd["suggestion"] == "drop").all()
    # Outliers are kept apart from the wrong-label suspicion: relabel is for the rest.
    others = sus[~sus["is_outlier"]]
    assert set(others["suggestion"].dropna()) <= {"relabel"}
    assert (others["suggestion"].notna() == others["is_suspect"]).all()
    assert sus["outlier"].notna().all()
    assert config.duplicates["exact"] >= 1 and config.outliers["flagged"] >= N_OUTLIERS


def test_every_stage_is_recorded(loop: Path) -> None:
    record = json.loads((loop / RECORD).read_text())
    assert list(record["stages"]) == list(STAGES)
    for stage in STAGES:
        entry = record["stages"][stage]
        assert set(entry["outputs"]) == set(OUTPUTS[stage])
        assert all((loop / name).is_file() for name in entry["outputs"])
    assert set(RUN_FILES) <= set(OUTPUTS["train"])
    assert record["stages"]["score"]["inputs"]["manifest"].startswith("sha256:")
    assert record["stages"]["train"]["options"]["train"]["epochs"] == 2
    assert record["stages"]["review"]["options"]["top"] == 20
    summary = record["stages"]["train"]["summary"]
    assert summary["rows"] == 100 + 2 + N_OUTLIERS and len(summary["noise_rate"]) == 10
    assert not [p for p in loop.iterdir() if p.name.endswith(".tmp")]


def test_a_rerun_redoes_only_what_changed(
    dirty: Path, loop: Path, feature_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(loop, out)  # a copy keeps the stamps: rerunning it changes nothing
    manifest = dirty / "manifest.csv"
    assert _ran(_run(manifest, out, feature_cache)) == []
    assert _ran(_run(manifest, out, feature_cache, "--top", "5")) == ["review"]
    assert _ran(_run(manifest, out, feature_cache, "--top", "5", "--train-k", "5")) == [
        "train",
        "review",
    ]
    assert _ran(_run(manifest, out, feature_cache, "--top", "5", "--train-k", "5")) == []
    # A file changed behind its back is made again, and what follows it.
    conf = pq.read_table(out / "conf.parquet")
    pq.write_table(conf, out / "conf.parquet")
    assert _ran(_run(manifest, out, feature_cache, "--top", "5", "--train-k", "5")) == list(STAGES)
    text = _run(manifest, out, feature_cache, "--top", "5", "--train-k", "5", "--force")
    assert _ran(text) == list(STAGES)


def test_an_interrupted_run_finishes_without_redoing_work(
    dirty: Path, feature_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import noisyclean.pipeline as pipeline

    out = tmp_path / "out"
    real_train = pipeline.train_run

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_run", interrupted)
    result = runner.invoke(
        app, ["run", str(dirty / "manifest.csv"), "-o", str(out), *_model_args(feature_cache)]
    )
    assert result.exit_code == 1 and "interrupted" in result.output
    assert not result.output.count("Traceback")
    assert list(json.loads((out / RECORD).read_text())["stages"]) == ["score"]
    assert not (out / "suspects.parquet").exists()

    monkeypatch.setattr(pipeline, "train_run", real_train)
    shards = sorted(feature_cache.rglob("*.npy"))
    computed: list[int] = []

    def counting(*args: object, **kwargs: object) -> pipeline.TrainResult:
        found = real_train(*args, **kwargs)  # type: ignore[arg-type]
        computed.append(found.computed)
        return found

    monkeypatch.setattr(pipeline, "train_run", counting)
    text = " ".join(
        runner.invoke(
            app, ["run", str(dirty / "manifest.csv"), "-o", str(out), *_model_args(feature_cache)]
        ).output.split()
    )
    assert _ran(text) == ["train", "review"], text
    assert computed == [0]  # every feature came from the cache
    assert sorted(feature_cache.rglob("*.npy")) == shards
    assert (out / "review.html").is_file()


def test_previous_reports_what_apply_changed(
    dirty: Path, loop: Path, feature_cache: Path, tmp_path: Path
) -> None:
    sus = pd.read_parquet(loop / "suspects.parquet")
    drop = sus[sus["is_outlier"]]
    relabel = sus[sus["is_suspect"] & ~sus["is_outlier"]].head(5)
    decisions = pd.concat(
        [
            pd.DataFrame({"id": drop["id"], "decision": "drop", "new_label": ""}),
            pd.DataFrame(
                {
                    "id": relabel["id"],
                    "decision": "relabel",
                    "new_label": relabel["suggested_label"],
                }
            ),
        ]
    )
    decisions.to_csv(tmp_path / "decisions.csv", index=False)
    clean = dirty / "clean.csv"
    applied = runner.invoke(
        app,
        ["apply", str(dirty / "manifest.csv"), str(tmp_path / "decisions.csv"), "-o", str(clean)],
    )
    assert applied.exit_code == 0, applied.output

    text = _run(clean, tmp_path / "after", feature_cache, "--previous", str(loop))
    n = 100 + 2 + N_OUTLIERS
    assert f"rows │ {n} │ {n - len(drop)} │ -{len(drop)}" in text.replace(",", "")
    assert f"{len(drop)} removed, 0 added, {len(relabel)} relabelled" in text
    assert "Estimated noise per class" in text and "suspects left" in text


def test_run_refuses_bad_folders(dirty: Path, loop: Path, feature_cache: Path) -> None:
    manifest = str(dirty / "manifest.csv")
    same = runner.invoke(app, ["run", manifest, "-o", str(loop), "--previous", str(loop)])
    assert same.exit_code == 1 and "--previous is the output folder" in same.output
    not_run = runner.invoke(
        app, ["run", manifest, "-o", str(loop.parent / "x"), "--previous", str(dirty)]
    )
    assert not_run.exit_code == 1 and "not a finished `noisyclean run` folder" in not_run.output
    inside = runner.invoke(app, ["run", str(loop / "conf.parquet"), "-o", str(loop)])
    assert inside.exit_code == 1 and "would overwrite the input" in inside.output
