"""Every command refuses, in one line and before any work, an output that would destroy
one of its inputs or that can't be written; and nothing from the data reaches the
terminal as a control sequence."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import SmallSet, score_args, write_csv
from typer.testing import CliRunner

from noisyclean.cli import app

runner = CliRunner()


def _digest(path: Path) -> str:
    if path.is_dir():
        return "".join(_digest(p) for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_outputs_equal_to_an_input_are_refused(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path, feature_cache: Path
) -> None:
    small, conf, run = trained_run
    manifest = shutil.copy(small.manifest, tmp_path / "m.parquet")  # a .parquet name
    before = {p: _digest(p) for p in (Path(manifest), small.manifest, conf, run)}
    cases = {
        "score onto its manifest": score_args(Path(manifest), Path(manifest), feature_cache),
        "embed onto its manifest": ["embed", str(run), str(manifest), "-o", str(manifest)],
        "embed into the run": ["embed", str(run), str(small.manifest), "-o", str(run / "x.pq")],
        "review onto suspects.parquet": ["review", str(run), "-o", str(run / "suspects.parquet")],
        "review onto config.json": ["review", str(run), "-o", str(run / "config.json")],
        "review into the run": ["review", str(run), "-o", str(run / "review.html")],
        "train onto its conf": ["train", "-w", str(conf), "-o", str(conf.parent)],
    }
    # conf.parquet is not a run file, so train into its folder is fine unless a run file
    # would be the conf itself: make that case real.
    renamed = conf.parent / "suspects.parquet"
    shutil.copy(conf, renamed)
    cases["train onto its conf"] = ["train", "-w", str(renamed), "-o", str(conf.parent)]
    for what, args in cases.items():
        line = _one_error_line(args)
        assert "would overwrite the input" in line or "inside the run directory" in line, what
    assert {p: _digest(p) for p in before} == before
    renamed.unlink()


def test_output_mistakes_are_one_line(
    small_set: SmallSet, tmp_path: Path, feature_cache: Path
) -> None:
    (tmp_path / "folder.parquet").mkdir()
    (tmp_path / "a-file").write_text("")
    line = _one_error_line(
        score_args(small_set.manifest, tmp_path / "folder.parquet", feature_cache)
    )
    assert "is a folder" in line
    line = _one_error_line(score_args(small_set.manifest, tmp_path / "conf.csv", feature_cache))
    assert "ending in .parquet or .pq" in line
    line = _one_error_line(
        score_args(small_set.manifest, tmp_path / "x" / "c.parquet", tmp_path / "a-file" / "cache")
    )
    assert "cannot write to this feature cache folder" in line
    line = _one_error_line(
        score_args(small_set.manifest, tmp_path / "a-file" / "c.parquet", feature_cache)
    )
    assert "cannot write to this output folder" in line
    assert not (tmp_path / "conf.csv").exists() and not (tmp_path / "x").exists()


def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    rows = [
        {"id": "r1", "path": "a.png", "label": "cat"},
        {"id": "r2", "path": "b.png", "label": "dog"},
        {"id": "r3", "path": "c.png", "label": "dog"},
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    hostile = "\x1b]0;pwned\x07\x1b[2Jred"
    decisions = tmp_path / "decisions.csv"
    write_csv(decisions, [{"id": "r1", "decision": "relabel", "new_label": hostile}])
    result = runner.invoke(
        app,
        [
            "apply",
            str(manifest),
            str(decisions),
            "-o",
            str(tmp_path / "c.csv"),
            "--allow-new-labels",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b]0;pwned\\x07\\x1b[2Jred" in result.output
    line = _one_error_line(["score", str(tmp_path / "no\x1b[2Jsuch.csv")])
    assert "\x1b" not in line and "no\\x1b[2Jsuch.csv" in line


@pytest.mark.parametrize("name", ["conf.parquet", "conf.pq"])
def test_parquet_names_are_accepted(
    small_set: SmallSet, tmp_path: Path, feature_cache: Path, name: str
) -> None:
    result = runner.invoke(
        app,
        score_args(
            small_set.manifest, tmp_path / name, feature_cache, "--folds", "2", "--epochs", "1"
        ),
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).is_file()
