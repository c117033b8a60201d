"""`noisyclean train` and `noisyclean embed` end to end through the CLI on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SmallSet
from typer.testing import CliRunner

from noisyclean.cli import app

runner = CliRunner()

SUSPECT_COLUMNS = [
    "id",
    "path",
    "label",
    "suggested_label",
    "suspicion",
    "confidence",
    "neighbour_agreement",
    "neighbours",
    "neighbours_suggested",
    "is_suspect",
    "rank",
    "status",
]


def test_run_directory(trained_run: tuple[SmallSet, Path, Path]) -> None:
    small, _, run = trained_run
    assert {p.name for p in run.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "embeddings.parquet",
        "suspects.parquet",
    }
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    config = json.loads((run / "config.json").read_text())
    assert len(config["run_id"]) >= 8
    assert config["train"]["loss"] == "smooth-proxy-anchor"
    assert config["train"]["seed"] == 0 and config["train"]["epochs"] == 3

    manifest = pd.read_csv(small.manifest, dtype=str)
    n = len(manifest) + 1  # the fixture adds a missing row
    sus = pd.read_parquet(run / "suspects.parquet")
    assert list(sus.columns[: len(SUSPECT_COLUMNS)]) == SUSPECT_COLUMNS
    assert len(sus) == n
    assert list(sus["id"][:-1]) == list(manifest["id"])
    missing = sus.iloc[-1]
    assert missing["status"] == "missing" and pd.isna(missing["rank"])
    assert pd.isna(missing["suspicion"]) and not missing["is_suspect"]
    ok = sus[sus["status"] == "ok"]
    assert sorted(ok["rank"].astype(int)) == list(range(1, len(ok) + 1))
    assert ok["suggested_label"].notna().all() and (ok["suggested_label"] != ok["label"]).all()
    schema = pq.read_schema(run / "suspects.parquet")
    assert str(schema.field("suspicion").type) == "float"
    assert str(schema.field("neighbours").type) == "list<element: string>"
    assert json.loads(schema.metadata[b"classes"]) == sorted(manifest["label"].unique())

    emb = pd.read_parquet(run / "embeddings.parquet")
    assert list(emb["id"]) == list(sus["id"]) and len(emb) == n
    assert emb["embedding"].iloc[-1] is None
    vectors = np.stack(emb["embedding"].iloc[:-1].to_list())
    assert vectors.shape == (n - 1, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_train_prints_the_report(trained_run: tuple[SmallSet, Path, Path]) -> None:
    small, _, _ = trained_run
    output = " ".join(small.root.joinpath("train-output.txt").read_text().split())
    assert "Top 5 suspects" in output
    assert "Estimated noise per class" in output
    assert "flagged as suspects" in output
    assert "Phase 1 confidence" in output and "Phase 2 suspicion" in output
    assert "estimated wrong labels:" in output and "95% interval" in output
    assert "as many as the estimate, the least supported of all classes; expected" in output


def test_noise_estimate_is_recorded(trained_run: tuple[SmallSet, Path, Path]) -> None:
    _, _, run = trained_run
    noise = json.loads((run / "config.json").read_text())["noise"]
    sus = pd.read_parquet(run / "suspects.parquet")
    ok = sus[sus["status"] == "ok"]
    assert noise["budget"] is None
    assert noise["noise_low"] <= noise["noise"] <= noise["noise_high"]
    # Without conflicting duplicates, the suspects are exactly the rule's flags.
    assert noise["flagged"] == int(ok["is_suspect"].sum())
    assert 0 <= noise["expected_precision"] <= 1


def test_flag_budget_flags_the_most_suspicious_rows(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path
) -> None:
    _, conf, _ = trained_run
    args = ["train", "-w", str(conf), "--epochs", "2", "--embedding-dim", "8", "--device", "cpu"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "run"), "--flag-budget", "7"])
    assert result.exit_code == 0, result.output
    assert "flagged 7 " in result.output and "a budget of 7" in result.output
    sus = pd.read_parquet(tmp_path / "run" / "suspects.parquet")
    ok = sus[sus["status"] == "ok"]
    # The budget's rows are the top of the ranking the page shows.
    assert set(ok.loc[ok["is_suspect"], "rank"]) == set(range(1, 8))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["suspects"]["flag_budget"] == 7 and config["noise"]["budget"] == 7
    bad = runner.invoke(app, [*args, "-o", str(tmp_path / "bad"), "--flag-budget", "0"])
    assert bad.exit_code == 2 and "flag-budget" in bad.output


@pytest.mark.parametrize("loss", ["proxy-anchor", "multi-similarity"])
def test_baseline_losses_run_through_the_same_pipeline(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path, loss: str
) -> None:
    _, conf, _ = trained_run
    result = runner.invoke(
        app,
        [
            "train",
            "-w",
            str(conf),
            "-o",
            str(tmp_path / "run"),
            "--loss",
            loss,
            "--epochs",
            "2",
            "--embedding-dim",
            "8",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["loss"] == loss
    assert len(pd.read_parquet(tmp_path / "run" / "suspects.parquet")) > 0


def test_embed_new_images(trained_run: tuple[SmallSet, Path, Path], tmp_path: Path) -> None:
    small, _, run = trained_run
    folder = tmp_path / "new"
    folder.mkdir()
    for r in small.rows[:3]:
        shutil.copyfile(small.root / r["path"], folder / Path(r["path"]).name)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "emb.parquet"
    result = runner.invoke(app, ["embed", str(run), str(folder), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert len(table) == 4
    assert table.set_index("id").loc["broken.png", "status"] == "unreadable"
    # The same image embeds to the same vector as in the run.
    run_emb = pd.read_parquet(run / "embeddings.parquet").set_index("id")["embedding"]
    new = table.set_index("id")["embedding"]
    first = small.rows[0]
    np.testing.assert_allclose(new[Path(first["path"]).name], run_emb[first["id"]], atol=1e-5)
    # A manifest works too.
    result = runner.invoke(app, ["embed", str(run), str(small.manifest), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == len(small.rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-w", "nope.parquet", "-o", "r"], "nope.parquet: no such file"),
        (["train", "-w", "{manifest}", "-o", "r"], "not a Parquet file"),
        (["train", "-w", "{conf}", "-o", "r", "--loss", "triplet"], "loss must be one of"),
        (["embed", "{tmp}", "{manifest}"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line(
    trained_run: tuple[SmallSet, Path, Path],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    small, conf, _ = trained_run
    subst = {"{manifest}": str(small.manifest), "{conf}": str(conf), "{tmp}": str(tmp_path)}
    result = runner.invoke(app, [subst.get(a, a) for a in args])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output
