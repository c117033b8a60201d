from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SmallSet, write_csv
from PIL import Image

from noisyclean.features import load_image
from noisyclean.manifest import ManifestError, load_manifest


def _csv(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _fatal(path: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# (file name, content, fragments the one-line message must contain)
FATAL_CSV = {
    "no path column": ("file,label\na.png,cat\n", ["m.csv", "'path' column", "file, label"]),
    "no label column": ("path,class\na.png,cat\n", ["m.csv", "'label' column", "path, class"]),
    "header only": ("path,label\n", ["m.csv", "no rows"]),
    "zero bytes": ("", ["m.csv", "not a readable manifest"]),
    "one class": (
        "path,label\na.png,cat\nb.png,cat\n",
        ["m.csv", "at least 2 classes", "'label' column", "found 1"],
    ),
    "duplicate id": (
        "id,path,label\nx,a.png,cat\ny,b.png,dog\nx,c.png,dog\n",
        ["m.csv row 3", "duplicate id 'x'", "first seen at row 1"],
    ),
    "empty id": ("id,path,label\nx,a.png,cat\n,b.png,dog\n", ["m.csv row 2", "empty id"]),
    "empty label": (
        "path,label\na.png,cat\nb.png,\nc.png,dog\nd.png,\n",
        ["m.csv row 2", "empty label", "2 rows"],
    ),
    "blank label": ("path,label\na.png,cat\nb.png,dog\nc.png,  \n", ["m.csv row 3", "empty label"]),
    "empty path": ("path,label\na.png,cat\n,dog\n", ["m.csv row 2", "empty path"]),
    "blank path": ("path,label\na.png,cat\n  ,dog\n", ["m.csv row 2", "empty path"]),
    "bad split": (
        "path,label,split\na.png,cat,train\nb.png,dog,validation\n",
        ["m.csv row 2", "split is 'validation'", "train or test"],
    ),
    "only test rows": ("path,label,split\na.png,cat,test\nb.png,dog,test\n", ["m.csv", "no train"]),
}


@pytest.mark.parametrize("case", list(FATAL_CSV))
def test_fatal_csv_gives_one_line_naming_row_or_column(tmp_path: Path, case: str) -> None:
    text, fragments = FATAL_CSV[case]
    message = _fatal(_csv(tmp_path, text))
    for fragment in fragments:
        assert fragment in message


def test_nan_label_in_parquet_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [1.0, 2.0, np.nan]}).to_parquet(
        path
    )
    message = _fatal(path)
    assert "m.parquet row 3" in message and "empty label" in message


def test_none_label_in_parquet_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [None, "dog"]}).to_parquet(path)
    assert "m.parquet row 1: empty label" in _fatal(path)


#: One null among values of each nullable pandas dtype, and the other values' strings.
NULLABLE = {
    "string": (["cat", None, "dog"], ["cat", "dog"]),
    "Int64": ([3, None, 10], ["3", "10"]),
    "Float64": ([3.0, None, 2.5], ["3", "2.5"]),
    "boolean": ([True, None, False], ["True", "False"]),
}


@pytest.mark.parametrize("dtype", list(NULLABLE))
def test_null_label_of_a_nullable_parquet_dtype_is_an_empty_label(
    tmp_path: Path, dtype: str
) -> None:
    path = tmp_path / "m.parquet"
    labels = pd.array(NULLABLE[dtype][0], dtype=dtype)
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": labels}).to_parquet(path)
    as_csv = _fatal(_csv(tmp_path, "path,label\na.png,cat\nb.png,\nc.png,dog\n"))
    assert _fatal(path) == as_csv.replace("m.csv", "m.parquet")


@pytest.mark.parametrize("dtype", list(NULLABLE))
def test_null_id_of_a_nullable_parquet_dtype_is_an_empty_id(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame(
        {
            "id": pd.array(NULLABLE[dtype][0], dtype=dtype),
            "path": ["a.png", "b.png", "c.png"],
            "label": ["cat", "dog", "cat"],
        }
    ).to_parquet(path)
    as_csv = _fatal(_csv(tmp_path, "id,path,label\nx,a.png,cat\n,b.png,dog\ny,c.png,cat\n"))
    assert _fatal(path) == as_csv.replace("m.csv", "m.parquet") == "m.parquet row 2: empty id"


@pytest.mark.parametrize("dtype", list(NULLABLE))
def test_nullable_parquet_values_keep_their_string_form(tmp_path: Path, dtype: str) -> None:
    values, expected = NULLABLE[dtype]
    present = pd.array([v for v in values if v is not None], dtype=dtype)
    path = tmp_path / "m.parquet"
    pd.DataFrame({"id": present, "path": ["a.png", "b.png"], "label": present}).to_parquet(path)
    m = load_manifest(path)
    assert m.frame["label"].tolist() == expected
    assert m.frame["id"].tolist() == expected
    assert m.classes == sorted(expected)


def test_named_parquet_index_is_the_id_column(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    frame = pd.DataFrame(
        {
            "id": ["r7", "r9", "r3"],
            "path": ["a.png", "b.png", "c.png"],
            "label": ["cat", "dog", "cat"],
        }
    )
    frame.set_index("id").to_parquet(path)
    m = load_manifest(path, check_files=False)
    assert m.frame["id"].tolist() == ["r7", "r9", "r3"]
    assert m.frame.index.tolist() == [0, 1, 2]
    # An unnamed index (here one left by a filter) is not data: ids are row numbers.
    frame.drop(columns="id").iloc[[1, 2]].to_parquet(path)
    assert load_manifest(path, check_files=False).frame["id"].tolist() == ["0", "1"]


def test_paths_keep_their_spaces(tmp_path: Path) -> None:
    (tmp_path / " a.png").write_bytes(b"a file whose name starts with a space")
    (tmp_path / "b.png ").write_bytes(b"one whose name ends with one")
    m = load_manifest(_csv(tmp_path, "id,path,label\n x , a.png, cat \ny,b.png ,dog\n"))
    assert m.frame["path"].tolist() == [" a.png", "b.png "]
    assert m.frame["status"].tolist() == ["ok", "ok"]
    # Ids and labels are still trimmed.
    assert m.frame["id"].tolist() == ["x", "y"]
    assert m.frame["label"].tolist() == ["cat", "dog"]


def _run_bound_by_file_permissions(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python that file permissions bind: as root (as in CI), root
    without its capabilities, so that it stays uid 0 (owner of the repo and tmp files)
    but loses the override of read and search permissions."""
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop root's permission override")
        cmd = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=100)


@pytest.mark.timeout(120)
def test_image_in_a_folder_we_may_not_read_is_unreadable_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"anything")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "b.png").write_bytes(b"anything")
    manifest = _csv(tmp_path, "path,label\na.png,cat\nlocked/b.png,dog\ngone.png,dog\n")
    code = (
        "from noisyclean.manifest import load_manifest\n"
        f"m = load_manifest({str(manifest)!r})\n"
        "print(*m.frame['status'], *m.train_mask)\n"
    )
    locked.chmod(0)
    try:
        result = _run_bound_by_file_permissions(code)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "unreadable", "missing", "True", "False", "False"]


def test_binary_garbage_is_not_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "m.csv" in _fatal(path)


def test_image_renamed_csv_is_not_a_manifest(tmp_path: Path, small_set: SmallSet) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes((small_set.root / small_set.rows[0]["path"]).read_bytes())
    assert "m.csv" in _fatal(path)


def test_garbage_parquet_is_not_a_manifest(tmp_path: Path) -> None:
    message = _fatal(_csv(tmp_path, "path,label\na.png,cat\n", name="m.parquet"))
    assert "m.parquet" in message and "not a readable manifest" in message


def test_folder_is_not_a_manifest(tmp_path: Path) -> None:
    message = _fatal(tmp_path)
    assert str(tmp_path) in message and "folder" in message


def test_nonexistent_manifest(tmp_path: Path) -> None:
    message = _fatal(tmp_path / "nope.csv")
    assert "nope.csv" in message and "no such file" in message


def test_ids_default_to_row_numbers_as_strings(tmp_path: Path) -> None:
    m = load_manifest(_csv(tmp_path, "path,label\na.png,cat\nb.png,dog\nc.png,cat\n"))
    assert m.frame["id"].tolist() == ["0", "1", "2"]
    assert all(isinstance(v, str) for v in m.frame["id"])
    assert m.frame["split"].tolist() == ["train"] * 3
    assert m.classes == ["cat", "dog"]
    assert m.label_index.tolist() == [0, 1, 0]


def test_given_ids_stay_strings(tmp_path: Path) -> None:
    m = load_manifest(_csv(tmp_path, "id,path,label\n007,a.png,cat\n10,b.png,dog\n"))
    assert m.frame["id"].tolist() == ["007", "10"]


def test_relative_paths_resolve_against_the_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_set: SmallSet
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    absolute = str(small_set.root / small_set.rows[1]["path"])
    path = write_csv(
        small_set.root / "relative-test.csv",
        [
            {"path": small_set.rows[0]["path"], "label": "a"},
            {"path": absolute, "label": "b"},
            {"path": "images/nope.png", "label": "b"},
        ],
    )
    m = load_manifest(path)
    assert m.root == small_set.root.resolve()
    assert m.frame["path"].tolist() == [small_set.rows[0]["path"], absolute, "images/nope.png"]
    assert m.resolved_paths[0] == small_set.root.resolve() / small_set.rows[0]["path"]
    assert m.resolved_paths[1] == Path(absolute)
    assert m.frame["status"].tolist() == ["ok", "ok", "missing"]


def test_missing_file_and_folder_rows_are_missing_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"anything; decoding is checked later")
    (tmp_path / "dir.png").mkdir()
    m = load_manifest(_csv(tmp_path, "path,label\na.png,cat\ngone.png,dog\ndir.png,dog\n"))
    assert m.frame["status"].tolist() == ["ok", "missing", "missing"]
    assert m.ok_mask.tolist() == [True, False, False]
    assert m.train_mask.tolist() == [True, False, False]
    assert load_manifest(m.source, check_files=False).frame["status"].tolist() == ["ok"] * 3


def test_split_and_train_mask(tmp_path: Path) -> None:
    text = "path,label,split\na.png,cat,train\nb.png,dog,TEST\nc.png,dog,\nd.png,cat,test\n"
    for name in "abcd":
        (tmp_path / f"{name}.png").touch()
    m = load_manifest(_csv(tmp_path, text))
    assert m.frame["split"].tolist() == ["train", "test", "train", "test"]
    assert m.train_mask.tolist() == [True, False, True, False]


def test_label_index_and_train_mask_are_computed_once(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / f"{name}.png").touch()
    text = "path,label,split\na.png,cat,train\nb.png,dog,train\nc.png,dog,test\n"
    m = load_manifest(_csv(tmp_path, text))
    assert m.train_mask is m.train_mask and m.label_index is m.label_index
    with pytest.raises(ValueError):
        m.train_mask[0] = False  # shared by every caller, so read-only
    after = m.with_status(np.array(["ok", "unreadable", "ok"]))
    assert after.frame["status"].tolist() == ["ok", "unreadable", "ok"]
    assert after.ok_mask.tolist() == [True, False, True]
    assert after.train_mask.tolist() == [True, False, False]
    assert after.label_index.tolist() == [0, 1, 1]
    assert m.frame["status"].tolist() == ["ok"] * 3  # the original is unchanged
    assert m.train_mask.tolist() == [True, True, False]
    for bad in (["ok", "ok"], ["ok", "gone", "ok"]):
        with pytest.raises(ValueError):
            m.with_status(np.array(bad))


def test_parquet_integer_labels_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame(
        {
            "id": [10, 11, 12],
            "path": ["a.png", "b.png", "c.png"],
            "label": np.array([3, 10, 3], dtype=np.int64),
            "true_label": [3, 3, 3],
        }
    ).to_parquet(path)
    m = load_manifest(path)
    assert m.frame["label"].tolist() == ["3", "10", "3"]
    assert m.frame["true_label"].tolist() == ["3", "3", "3"]
    assert m.frame["id"].tolist() == ["10", "11", "12"]
    assert m.classes == ["10", "3"]  # sorted as strings: labels are names, not numbers


def test_float_labels_with_integer_values_lose_their_dot_zero(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [1.0, 2.5]}).to_parquet(path)
    assert load_manifest(path).frame["label"].tolist() == ["1", "2.5"]


def test_extra_columns_and_true_label_are_carried_through(tmp_path: Path) -> None:
    text = "path,source,label,true_label,note\na.png,web,cat,dog,\nb.png,crawl,dog,dog,NA\n"
    m = load_manifest(_csv(tmp_path, text))
    assert m.frame["source"].tolist() == ["web", "crawl"]
    assert m.frame["true_label"].tolist() == ["dog", "dog"]
    assert m.frame["note"].iloc[1] == "NA"  # a label or value 'NA' is data, not a null
    assert {"id", "path", "label", "split", "status"} <= set(m.frame.columns)


def test_label_na_is_a_class_not_a_missing_value(tmp_path: Path) -> None:
    m = load_manifest(_csv(tmp_path, "path,label\na.png,NA\nb.png,null\n"))
    assert m.classes == ["NA", "null"]


def test_rows_keep_manifest_order(small_set: SmallSet) -> None:
    m = load_manifest(small_set.manifest)
    assert m.frame["id"].tolist() == [r["id"] for r in small_set.rows]
    assert len(m) == len(small_set.rows)
    assert (m.frame["status"] == "ok").all()
    assert len(m.classes) == 10


# --- images in every mode load as 8-bit RGB -------------------------------------------------


def _gradient16() -> np.ndarray:
    return (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 500).astype(np.uint16)


def test_greyscale_becomes_rgb(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.size == (8, 8)
    a = np.asarray(img)
    assert (a[..., 0] == grey).all() and (a[..., 1] == grey).all() and (a[..., 2] == grey).all()


def test_one_bit_becomes_rgb(tmp_path: Path) -> None:
    Image.new("1", (5, 5), 1).save(tmp_path / "b.png")
    img = load_image(tmp_path / "b.png")
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path: Path, mode: str) -> None:
    img = Image.new("RGBA", (4, 2), (200, 10, 10, 255))
    img.putpixel((0, 0), (200, 10, 10, 0))
    img.convert(mode).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    opaque = (200, 10, 10) if mode == "RGBA" else (out.getpixel((1, 0))[0],) * 3
    assert out.getpixel((1, 0)) == opaque
    assert opaque != (255, 255, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"c.{fmt.lower()}"
    Image.new("CMYK", (4, 4), (255, 0, 0, 0)).save(path, fmt)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((1, 1))
    assert r < 30 and g > 225 and b > 225  # pure cyan


def test_palette_with_transparency_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("P", (3, 1), 0)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    img.save(tmp_path / "p.png", transparency=0)
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = load_image(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (255, 0, 0), (0, 0, 255)]


def test_palette_without_transparency_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6))
    img.save(tmp_path / "p.gif")
    assert load_image(tmp_path / "p.gif").getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_is_scaled_to_eight_bit_rgb(tmp_path: Path, suffix: str) -> None:
    a = _gradient16()
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert (np.diff(out[..., 0].ravel().astype(int)) >= 0).all()  # order kept
    assert (out[..., 0] == out[..., 2]).all()


def test_flat_sixteen_bit_image_does_not_divide_by_zero(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 777, dtype=np.uint16)).save(tmp_path / "flat.png")
    out = np.asarray(load_image(tmp_path / "flat.png"))
    assert out.shape == (4, 4, 3) and (out == 0).all()
