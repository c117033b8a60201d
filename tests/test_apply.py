"""``noisyclean apply``: decisions change labels, drop rows to a sidecar, keep everything
else as it was, and every bad input is refused with one line before anything is written."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_csv
from typer.testing import CliRunner, Result

from noisyclean.apply import DecisionsError, apply_decisions, dropped_path, read_decisions
from noisyclean.cli import app

runner = CliRunner()

#: A label that CSV must quote and a terminal must not read as rich markup.
ODD_LABEL = 'Coat, "long" [bold]'
COLUMNS = ["id", "path", "label", "split", "note", "score"]


def manifest_rows(n: int = 12) -> list[dict[str, str]]:
    classes = ["Bag", "Coat", "Shirt", ODD_LABEL]
    return [
        {
            "id": f"r{i:02d}",
            "path": f"images/{i:05d}.png",
            "label": classes[i % len(classes)],
            "split": "test" if i % 5 == 4 else "train",
            "note": f'note {i}, with "quotes"' if i % 3 == 0 else "",
            "score": f"{i / 7:.6f}" if i % 2 else "007",
        }
        for i in range(n)
    ]


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
        return path
    return write_csv(path, rows)


def write_decisions(
    path: Path, rows: Sequence[Sequence[str]], header: str = "id,decision,new_label"
) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return [
            {str(k): "" if pd.isna(v) else str(v) for k, v in r.items()}
            for r in frame.to_dict("records")
        ]
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, ["apply", *map(str, args)])


def failed_cleanly(result: Result) -> str:
    """The one line of a refusal: exit code 1 through typer.Exit, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


DECISIONS = [
    ("r01", "relabel", "Bag"),  # Coat -> Bag
    ("r02", "drop", ""),
    ("r03", "relabel", "Shirt"),  # odd label -> Shirt
    ("r05", "keep", ""),
    ("r06", "relabel", "Shirt"),  # Shirt -> Shirt: a keep
    ("r07", "relabel", ODD_LABEL),  # odd label -> odd label: a keep
    ("r08", "relabel", ODD_LABEL),  # Bag -> odd label
    ("r09", "drop", ""),
    ("r09", "drop", ""),  # an identical duplicate is fine
    ("r10", "relabel", "Bag"),  # Shirt -> Bag
]


@pytest.mark.parametrize("src_ext", [".csv", ".parquet"])
@pytest.mark.parametrize("out_ext", [".csv", ".parquet"])
def test_apply_row_by_row(tmp_path: Path, src_ext: str, out_ext: str) -> None:
    rows = manifest_rows()
    manifest = write_manifest(tmp_path / f"manifest{src_ext}", rows)
    decisions = write_decisions(tmp_path / "decisions.csv", DECISIONS)
    out = tmp_path / f"clean{out_ext}"
    result = invoke(manifest, decisions, "-o", out)
    assert result.exit_code == 0, result.output

    new = {"r01": "Bag", "r03": "Shirt", "r08": ODD_LABEL, "r10": "Bag"}
    dropped = {"r02", "r09"}
    expected = [
        {**r, "label": new.get(r["id"], r["label"])} for r in rows if r["id"] not in dropped
    ]
    cleaned = read_rows(out)
    assert cleaned == expected  # every column, every value, the same order
    assert list(cleaned[0]) == COLUMNS  # no column added (no status, no split default)
    sidecar = tmp_path / f"clean.dropped{out_ext}"
    assert read_rows(sidecar) == [r for r in rows if r["id"] in dropped]
    assert len(rows) == len(cleaned) + len(read_rows(sidecar))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {manifest.name, "decisions.csv", out.name, sidecar.name}
    )

    output = result.output
    assert "kept" in output and "dropped" in output
    assert "relabelled Coat → Bag" in output and f"relabelled {ODD_LABEL} → Shirt" in output
    assert f"relabelled Bag → {ODD_LABEL}" in output  # the label printed as text, not markup


def test_summary_counts(tmp_path: Path) -> None:
    rows = manifest_rows()
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    decisions = write_decisions(tmp_path / "decisions.csv", DECISIONS)
    s = apply_decisions(manifest, decisions, tmp_path / "out" / "clean.csv")
    assert (s.rows_in, s.kept, s.dropped, s.decisions) == (12, 6, 2, len(DECISIONS))
    assert s.relabelled == {
        ("Bag", ODD_LABEL): 1,
        ("Coat", "Bag"): 1,
        ("Shirt", "Bag"): 1,
        (ODD_LABEL, "Shirt"): 1,
    }
    assert s.rows_in == s.rows_out + s.dropped
    assert s.dropped_path == (tmp_path / "out" / "clean.dropped.csv").resolve()
    # The relative image paths resolve against the manifest's folder, which OUT is not in.
    assert len(s.warnings) == 1 and "relative paths" in s.warnings[0]
    s = apply_decisions(manifest, decisions, tmp_path / "clean.csv")
    assert s.warnings == ()


def test_manifest_without_id_matches_row_numbers(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "id"} for r in manifest_rows(6)]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    decisions = write_decisions(
        tmp_path / "decisions.csv", [("0", "drop", ""), ("4", "relabel", "Coat")]
    )
    result = invoke(manifest, decisions, "-o", tmp_path / "clean.csv")
    assert result.exit_code == 0, result.output
    cleaned = read_rows(tmp_path / "clean.csv")
    assert "id" not in cleaned[0]
    assert cleaned == [{**r, "label": "Coat"} if i == 4 else r for i, r in enumerate(rows) if i]
    assert read_rows(tmp_path / "clean.dropped.csv") == rows[:1]
    # Row numbers count from 0, like the ids noisyclean gives such a manifest: "6" is unknown.
    write_decisions(decisions, [("6", "drop", "")])
    line = failed_cleanly(invoke(manifest, decisions, "-o", tmp_path / "again.csv"))
    assert "'6'" in line and "no such id" in line


def test_no_decisions_keeps_everything(tmp_path: Path) -> None:
    rows = manifest_rows(5)
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    decisions = write_decisions(tmp_path / "decisions.csv", [])
    s = apply_decisions(manifest, decisions, tmp_path / "clean.csv")
    assert (s.kept, s.dropped, s.relabelled) == (5, 0, {})
    assert read_rows(tmp_path / "clean.csv") == rows
    assert read_rows(tmp_path / "clean.dropped.csv") == []


def test_integer_labels_keep_their_type(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [1, 2, 3]}).to_parquet(manifest)
    decisions = write_decisions(tmp_path / "decisions.csv", [("1", "relabel", "3")])
    apply_decisions(manifest, decisions, tmp_path / "clean.parquet")
    out = pd.read_parquet(tmp_path / "clean.parquet")
    assert out["label"].tolist() == [1, 3, 3]
    assert pd.api.types.is_integer_dtype(out["label"])
    write_decisions(decisions, [("1", "relabel", "cat")])
    apply_decisions(manifest, decisions, tmp_path / "mixed.parquet", allow_new_labels=True)
    assert pd.read_parquet(tmp_path / "mixed.parquet")["label"].tolist() == ["1", "cat", "3"]


def test_new_labels_need_the_flag(tmp_path: Path) -> None:
    rows = manifest_rows(4)
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    decisions = write_decisions(tmp_path / "decisions.csv", [("r00", "relabel", "Sandal")])
    line = failed_cleanly(invoke(manifest, decisions, "-o", tmp_path / "clean.csv"))
    assert "'Sandal'" in line and "r00" in line and "--allow-new-labels" in line
    assert not (tmp_path / "clean.csv").exists()
    result = invoke(manifest, decisions, "-o", tmp_path / "clean.csv", "--allow-new-labels")
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "clean.csv")[0]["label"] == "Sandal"


def test_decisions_are_read_leniently(tmp_path: Path) -> None:
    path = tmp_path / "decisions.csv"
    path.write_text("decision, id ,new_label,comment\n Relabel ,r01, Bag ,why not\nDROP,r02,,\n")
    frame = read_decisions(path)
    assert frame.to_dict("records") == [
        {"id": "r01", "decision": "relabel", "new_label": "Bag"},
        {"id": "r02", "decision": "drop", "new_label": ""},
    ]


def test_ragged_row_is_counted_as_a_data_row(tmp_path: Path) -> None:
    # pandas' own message counts the blank line and says "line 4".
    path = tmp_path / "decisions.csv"
    path.write_text('id,decision,new_label\n"r01",drop,\n\nr02,keep,,oops\n')
    with pytest.raises(DecisionsError) as err:
        read_decisions(path)
    assert str(err.value) == (
        "decisions.csv row 2: too many fields (4, expected 3: id,decision,new_label)"
    )


def test_short_rows_have_empty_trailing_fields(tmp_path: Path) -> None:
    path = tmp_path / "decisions.csv"
    path.write_text("id,decision,new_label\nr01,drop\nr02,Keep\n")
    assert read_decisions(path).to_dict("records") == [
        {"id": "r01", "decision": "drop", "new_label": ""},
        {"id": "r02", "decision": "keep", "new_label": ""},
    ]


@pytest.mark.parametrize("out_ext", [".csv", ".parquet"])
def test_ids_in_a_parquet_index_are_kept(tmp_path: Path, out_ext: str) -> None:
    rows = manifest_rows(6)
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).set_index("id").to_parquet(manifest)
    decisions = write_decisions(
        tmp_path / "decisions.csv", [("r01", "relabel", "Bag"), ("r02", "drop", "")]
    )
    out = tmp_path / f"clean{out_ext}"
    summary = apply_decisions(manifest, decisions, out)
    assert summary.dropped == 1 and summary.relabelled == {("Coat", "Bag"): 1}
    expected = [{**r, "label": "Bag"} if r["id"] == "r01" else r for r in rows]
    assert read_rows(out) == [r for r in expected if r["id"] != "r02"]
    assert read_rows(dropped_path(out)) == [rows[2]]


def test_dropped_path() -> None:
    assert dropped_path(Path("out/clean.csv")) == Path("out/clean.dropped.csv")
    assert dropped_path(Path("clean.parquet")) == Path("clean.dropped.parquet")


Setup = Callable[[Path, Path, Path], list[str | Path]]


def _decisions(rows: Sequence[Sequence[str]], header: str = "id,decision,new_label") -> Setup:
    def setup(tmp: Path, manifest: Path, decisions: Path) -> list[str | Path]:
        write_decisions(decisions, rows, header)
        return [manifest, decisions, "-o", tmp / "clean.csv"]

    return setup


def _output(name: str) -> Setup:
    def setup(tmp: Path, manifest: Path, decisions: Path) -> list[str | Path]:
        write_decisions(decisions, [("r01", "drop", "")])
        target = {"manifest": manifest, "decisions": decisions}.get(name, tmp / name)
        return [manifest, decisions, "-o", target]

    return setup


def _sidecar_is(name: str) -> Setup:
    """The input is itself named like the sidecar of the output asked for."""

    def setup(tmp: Path, manifest: Path, decisions: Path) -> list[str | Path]:
        write_decisions(decisions, [("r01", "drop", "")])
        if name == "manifest":
            moved = manifest.rename(tmp / "clean.dropped.csv")
            return [moved, decisions, "-o", tmp / "clean.csv"]
        moved = decisions.rename(tmp / "clean.dropped.csv")
        return [manifest, moved, "-o", tmp / "clean.csv"]

    return setup


def _same_file_other_spelling(tmp: Path, manifest: Path, decisions: Path) -> list[str | Path]:
    write_decisions(decisions, [("r01", "drop", "")])
    (tmp / "sub").mkdir()
    (tmp / "link.csv").symlink_to(manifest)
    return [manifest, decisions, "-o", tmp / "sub" / ".." / "link.csv"]


def _empty_decisions(tmp: Path, manifest: Path, decisions: Path) -> list[str | Path]:
    decisions.write_text("")
    return [manifest, decisions, "-o", tmp / "clean.csv"]


REFUSALS: dict[str, tuple[Setup, tuple[str, ...]]] = {
    "unknown id": (
        _decisions([("r01", "keep", ""), ("nope", "drop", ""), ("gone", "drop", "")]),
        ("row 2", "'nope'", "no such id", "1 more"),
    ),
    "unknown label": (
        _decisions([("r01", "relabel", "Sandal")]),
        ("row 1", "'r01'", "'Sandal'", "--allow-new-labels"),
    ),
    "conflicting duplicates": (
        _decisions([("r01", "drop", ""), ("r02", "keep", ""), ("r01", "relabel", "Bag")]),
        ("row 3", "'r01'", "conflicting", "row 1"),
    ),
    "conflicting relabels": (
        _decisions([("r01", "relabel", "Bag"), ("r01", "relabel", "Shirt")]),
        ("row 2", "'r01'", "conflicting", "'Bag'", "'Shirt'"),
    ),
    "unknown decision": (
        _decisions([("r01", "keep", ""), ("r02", "delete", "")]),
        ("row 2", "'r02'", "'delete'", "keep, relabel or drop"),
    ),
    "relabel without label": (
        _decisions([("r01", "relabel", "")]),
        ("row 1", "'r01'", "new_label"),
    ),
    "empty id": (_decisions([("", "drop", "")]), ("row 1", "empty id")),
    "row with too many fields": (
        _decisions([("r01", "keep", ""), ("r02", "drop", ""), ("r03", "drop", "", "x")]),
        ("decisions.csv row 3: too many fields (4, expected 3: id,decision,new_label)",),
    ),
    "every row with too many fields": (
        _decisions([("r01", "drop", "", "x"), ("r02", "drop", "", "y")]),
        ("decisions.csv row 1: too many fields (4, expected 3: id,decision,new_label)",),
    ),
    "row without a decision": (
        _decisions([("r01", "drop"), ("r02",)]),
        ("row 2", "'r02'", "empty decision", "keep, relabel or drop"),
    ),
    "missing column": (
        _decisions([("r01", "drop")], header="id,decision"),
        ("missing column", "new_label"),
    ),
    "empty file": (_empty_decisions, ("decisions.csv", "empty file")),
    "output is the manifest": (_output("manifest"), ("overwrite the manifest",)),
    "output is the decisions": (_output("decisions"), ("overwrite the decisions",)),
    "output via a link": (_same_file_other_spelling, ("overwrite the manifest",)),
    "sidecar is the manifest": (_sidecar_is("manifest"), ("sidecar", "overwrite the manifest")),
    "sidecar is the decisions": (_sidecar_is("decisions"), ("sidecar", "overwrite the decisions")),
    "output format": (_output("clean.txt"), (".csv or .parquet",)),
}


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    manifest = write_manifest(tmp_path / "manifest.csv", manifest_rows())
    return manifest, tmp_path / "decisions.csv"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_cli_refuses(case: str, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    setup, needles = REFUSALS[case]
    args = setup(tmp_path, *inputs)
    before = _snapshot(tmp_path)
    line = failed_cleanly(invoke(*args))
    assert line.startswith("error:")
    for needle in needles:
        assert needle in line, (needle, line)
    assert _snapshot(tmp_path) == before  # nothing written, nothing overwritten


@pytest.mark.parametrize("case", list(REFUSALS))
def test_library_refuses(case: str, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    setup, _ = REFUSALS[case]
    manifest, decisions, _, output = setup(tmp_path, *inputs)
    with pytest.raises(DecisionsError) as err:
        apply_decisions(Path(manifest), Path(decisions), Path(output))
    assert "\n" not in str(err.value)


def test_missing_decisions_file(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    manifest, decisions = inputs
    line = failed_cleanly(invoke(manifest, decisions, "-o", tmp_path / "clean.csv"))
    assert "decisions.csv: no such file" in line
    line = failed_cleanly(invoke(tmp_path / "none.csv", decisions, "-o", tmp_path / "c.csv"))
    assert "none.csv" in line


def test_help_lists_the_option() -> None:
    result = runner.invoke(app, ["apply", "--help"])
    assert result.exit_code == 0 and "--allow-new-labels" in result.output


def test_output_folder_is_refused(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    manifest, decisions = inputs
    write_decisions(decisions, [("r01", "drop", "")])
    (tmp_path / "clean.csv").mkdir()
    line = failed_cleanly(invoke(manifest, decisions, "-o", tmp_path / "clean.csv"))
    assert "is a folder" in line
    assert not (tmp_path / "clean.dropped.csv").exists()


def test_categorical_labels(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    labels = pd.Categorical(["cat", "dog", "cat"])
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": labels}).to_parquet(manifest)
    decisions = write_decisions(
        tmp_path / "decisions.csv", [("0", "relabel", "dog"), ("2", "relabel", "bird")]
    )
    apply_decisions(manifest, decisions, tmp_path / "clean.parquet", allow_new_labels=True)
    assert pd.read_parquet(tmp_path / "clean.parquet")["label"].tolist() == ["dog", "dog", "bird"]
