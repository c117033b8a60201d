"""The file formats: each damaged or foreign noisyclean file is one ArtifactError line naming
the file and the field, never a traceback, and through the CLI one red line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SmallSet
from typer.testing import CliRunner

from noisyclean.artifacts import (
    CONF_FORMAT,
    RUN_FORMAT,
    ArtifactError,
    dense_column,
    list_column,
    read_conf,
    read_model,
    read_run_config,
    read_suspects,
    write_text,
)
from noisyclean.cli import app

runner = CliRunner()


def _rewrite_conf(
    src: Path, dst: Path, *, meta: dict[str, str] | None = None, table: Callable | None = None
) -> Path:
    t = pq.read_table(src)
    if table is not None:
        t = table(t)
    raw = {k.decode(): v.decode() for k, v in (pq.read_schema(src).metadata or {}).items()}
    raw.update(meta or {})
    pq.write_table(t.replace_schema_metadata({k: v for k, v in raw.items() if v is not None}), dst)
    return dst


def _set_list(t: pa.Table, name: str, values: list, kind: pa.DataType) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, pa.array(values, type=kind))


def _edit_scores(edit: Callable[[list], None]) -> Callable[[pa.Table], pa.Table]:
    def run(t: pa.Table) -> pa.Table:
        rows = t.column("top_confidences").to_pylist()
        edit(rows)
        return _set_list(t, "top_confidences", rows, pa.list_(pa.float32()))

    return run


def _short_list(rows: list) -> None:
    rows[0] = rows[0][:-1]


def _null_list(rows: list) -> None:
    rows[1] = None


def _null_value(rows: list) -> None:
    rows[2] = [None, *rows[2][1:]]


def _unknown_label(t: pa.Table) -> pa.Table:
    rows = t.column("top_labels").to_pylist()
    rows[0] = ["Zebra", *rows[0][1:]]
    return _set_list(t, "top_labels", rows, pa.list_(pa.string()))


def _contradicting_confidence(t: pa.Table) -> pa.Table:
    given = t.column("confidence").to_pylist()
    given[0] = 0.5 * given[0] + 0.25
    return t.set_column(
        t.schema.get_field_index("confidence"), "confidence", pa.array(given, pa.float32())
    )


def _edit_neighbours(t: pa.Table) -> pa.Table:
    rows = t.column("neighbours").to_pylist()
    rows[0] = [*rows[0][:-1], "no-such-id"]
    return _set_list(t, "neighbours", rows, pa.list_(pa.string()))


def _short_similarities(t: pa.Table) -> pa.Table:
    rows = t.column("neighbour_similarities").to_pylist()
    rows[1] = rows[1][:-1]
    return _set_list(t, "neighbour_similarities", rows, pa.list_(pa.float32()))


CONF_DAMAGE: dict[str, tuple[dict, str]] = {
    "classes not JSON": (
        {"meta": {"classes": "[Bag, Coat"}},
        "metadata 'classes' is not valid JSON",
    ),
    "an extra class": ({"meta": {"classes": "EXTRA"}}, "'Zebra', the label of no row"),
    "a class twice": ({"meta": {"classes": "TWICE"}}, "names a class twice"),
    "image_size abc": ({"meta": {"image_size": "abc"}}, "metadata 'image_size' is not valid JSON"),
    "image_size -5": ({"meta": {"image_size": "-5"}}, "'image_size' is -5, not a positive integer"),
    "no backbone": ({"meta": {"backbone": None}}, "metadata 'backbone' missing"),
    "top_classes 0": ({"meta": {"top_classes": "0"}}, "'top_classes' is 0, not a positive"),
    "short list": ({"table": _edit_scores(_short_list)}, "row 1: 9 values, expected 10"),
    "null list": ({"table": _edit_scores(_null_list)}, "row 2: null, expected 10"),
    "null value": ({"table": _edit_scores(_null_value)}, "row 3: a null value"),
    "unknown top label": ({"table": _unknown_label}, "not among the metadata's classes"),
    "contradicting confidence": (
        {"table": _contradicting_confidence},
        "top lists disagree with the 'confidence'",
    ),
    "unknown neighbour": ({"table": _edit_neighbours}, "'no-such-id' is the id of no row"),
    "short similarities": (
        {"table": _short_similarities},
        "'neighbour_similarities', row 2: 9 values, expected 10",
    ),
    "older format": ({"meta": {"format_version": "2"}}, "conf.parquet format 2"),
    "no format": ({"meta": {"format_version": None}}, "conf.parquet format 0"),
    "newer format": (
        {"meta": {"format_version": str(CONF_FORMAT + 1)}},
        f"format {CONF_FORMAT + 1} (written by",
    ),
}


@pytest.mark.parametrize("case", list(CONF_DAMAGE), ids=list(CONF_DAMAGE))
def test_damaged_conf_is_one_line_naming_file_and_field(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path, case: str
) -> None:
    _, conf, _ = trained_run
    spec, message = CONF_DAMAGE[case]
    classes = json.loads(pq.read_schema(conf).metadata[b"classes"])
    meta = dict(spec.get("meta", {}))
    if meta.get("classes") == "EXTRA":
        meta["classes"] = json.dumps([*classes, "Zebra"])
    elif meta.get("classes") == "TWICE":
        meta["classes"] = json.dumps([*classes[:-1], classes[0]])
    bad = _rewrite_conf(conf, tmp_path / "conf.parquet", meta=meta, table=spec.get("table"))
    with pytest.raises(ArtifactError) as err:
        read_conf(bad)
    assert message in str(err.value) and str(bad) in str(err.value)
    assert "\n" not in str(err.value)
    # The CLI says the same in one line, before any training.
    result = runner.invoke(app, ["train", "-w", str(bad), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    if case == "newer format":
        assert f"format {CONF_FORMAT}" in lines[0]  # both versions named
    assert not (tmp_path / "run").exists()


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _edit_config(run: Path, edit: Callable[[dict], None]) -> None:
    path = run / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


RUN_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "config.json not JSON": (
        lambda r: (r / "config.json").write_text("{not json"),
        "config.json: not valid JSON",
    ),
    "config.json a list": (lambda r: (r / "config.json").write_text("[]"), "not a JSON object"),
    "image_size abc": (
        lambda r: _edit_config(r, lambda c: c.update(image_size="abc")),
        "'image_size' is 'abc'",
    ),
    "no run_id": (lambda r: _edit_config(r, lambda c: c.pop("run_id")), "key 'run_id' missing"),
    "newer format": (
        lambda r: _edit_config(r, lambda c: c.update(format_version=99)),
        "run config format 99",
    ),
    "truncated model": (
        lambda r: (r / "model.safetensors").write_bytes(
            (r / "model.safetensors").read_bytes()[:200]
        ),
        "model.safetensors: not a readable safetensors file",
    ),
    "model of another run": (
        lambda r: _edit_config(r, lambda c: c.update(run_id="someotherrun")),
        "run_id",
    ),
    "suspects.parquet missing": (
        lambda r: (r / "suspects.parquet").unlink(),
        "not a run directory (suspects.parquet missing)",
    ),
    "suspects.parquet not Parquet": (
        lambda r: (r / "suspects.parquet").write_text("id,label\n"),
        "suspects.parquet: not a Parquet file",
    ),
}


@pytest.mark.parametrize("case", list(RUN_DAMAGE), ids=list(RUN_DAMAGE))
@pytest.mark.parametrize("command", ["embed", "review"])
def test_damaged_run_is_one_line(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path, case: str, command: str
) -> None:
    small, _, run = trained_run
    damage, message = RUN_DAMAGE[case]
    if command == "review" and case == "truncated model":
        pytest.skip("the review page does not read the model")
    if command == "embed" and case == "suspects.parquet not Parquet":
        pytest.skip("embed does not read suspects.parquet")
    bad = _copy_run(run, tmp_path / "run")
    damage(bad)
    args = (
        ["embed", str(bad), str(small.manifest), "-o", str(tmp_path / "e.parquet")]
        if command == "embed"
        else ["review", str(bad), "-o", str(tmp_path / "page.html")]
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_run_readers_accept_a_good_run(trained_run: tuple[SmallSet, Path, Path]) -> None:
    _, _, run = trained_run
    config = read_run_config(run)
    frame = read_suspects(run, config)
    tensors = read_model(run, config)
    assert len(frame) == len(pq.read_table(run / "embeddings.parquet"))
    assert tensors["head.linear.weight"].shape == (config.embedding_dim, config.feature_dim)
    for name in ("config.json", "suspects.parquet", "embeddings.parquet"):
        path = run / name
        text = path.read_text() if name.endswith(".json") else None
        version = (
            json.loads(text)["format_version"]
            if text
            else int(pq.read_schema(path).metadata[b"format_version"])
        )
        assert version == RUN_FORMAT


def test_conf_keeps_phase_1_voters_by_id(trained_run: tuple[SmallSet, Path, Path]) -> None:
    _, path, _ = trained_run
    conf = read_conf(path)
    table = pq.read_table(path, columns=["id", "neighbours", "neighbour_similarities"])
    ids = conf.frame["id"].to_numpy()
    ok = conf.ok
    train = ok & (conf.frame["split"] == "train").to_numpy()
    near = conf.neighbours
    assert near.shape == (len(ids), conf.meta.k)
    assert (near[~ok] == -1).all() and np.isnan(conf.similarities[~ok]).all()
    assert train[near[ok]].all() and not (near == np.arange(len(ids))[:, None]).any()
    # The file names the voters by id, nearest first.
    first = int(np.flatnonzero(ok)[0])
    assert table.column("neighbours")[first].as_py() == list(ids[near[first]])
    assert (np.diff(conf.similarities[ok], axis=1) <= 1e-6).all()


def test_list_column_round_trip_without_python_lists() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((6, 4), dtype=np.float32)
    ok = np.array([True, False, True, True, False, True])
    col = list_column(values, ok)
    assert col.null_count == 2 and col.type == pa.list_(pa.float32())
    back = dense_column(col, 4, ok)
    assert np.array_equal(back[ok], values[ok]) and not back[~ok].any()
    with pytest.raises(ValueError, match="row 2: null"):
        dense_column(col, 4, np.ones(6, dtype=bool))


def test_outputs_respect_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    write_text(tmp_path / "b.txt", "x")
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~old


@pytest.mark.timeout(120)
def test_a_read_only_output_folder_is_one_line(
    trained_run: tuple[SmallSet, Path, Path], tmp_path: Path
) -> None:
    """Root ignores permissions: the command runs with root's override capabilities dropped."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's capabilities")
    small, conf, run = trained_run
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if os.geteuid() == 0 else []
    cases = [
        ["review", str(run), "-o", str(locked / "page.html")],
        ["train", "-w", str(conf), "-o", str(locked / "run")],
        ["embed", str(run), str(small.manifest), "-o", str(locked / "e.parquet")],
    ]
    for args in cases:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "noisyclean", *args],
            capture_output=True,
            text=True,
            timeout=100,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "cannot write" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
