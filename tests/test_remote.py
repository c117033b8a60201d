"""Images wherever they live: objects in S3 and on HTTP servers, bytes embedded in Parquet.

The servers are real: an S3-compatible server (moto's, in a thread, on a free port,
reached through s3fs with fake credentials and ``AWS_ENDPOINT_URL``) and a local HTTP
server (pytest-httpserver, threaded, so that a stalled answer does not block the others).
Nothing of fsspec, s3fs or aiohttp is mocked.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_DIR, score_args, write_csv
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from noisyclean.apply import apply_decisions
from noisyclean.cli import app
from noisyclean.images import UnreadableImageError, load_image
from noisyclean.manifest import ManifestError, load_manifest
from noisyclean.sources import (
    URL,
    ObjectNotFoundError,
    SourceError,
    as_location,
    read_bytes,
    redact,
    stat_url,
    url_keys,
)

runner = CliRunner()

BUCKET = "noisy-bucket"
#: Seconds a request may take in these tests, and how long the stalled object stalls.
TIMEOUT = 1.5
STALL = 4.0
#: Four classes, three images each: enough for 2 folds and a 3-NN vote.
CLASSES = ("Bag", "Sneaker", "Trouser", "Sandal")
PER_CLASS = 3
#: What a signed URL carries that must never be stored.
SECRETS = ("hunter2", "SIGNATURE0123", "CREDENTIAL0123", "TOKEN0123", "SASKEY0123")
SIGNED_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=CREDENTIAL0123"
    "&X-Amz-Signature=SIGNATURE0123&token=TOKEN0123&sig=SASKEY0123&v=2"
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """pytest-httpserver's server, threaded (a stalled answer must not block the others)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's) on a free port, and the environment s3fs reads:
    fake credentials and the standard ``AWS_ENDPOINT_URL``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_endpoint: str) -> Any:
    """s3fs on the test server, with the bucket made."""
    import s3fs

    fs = s3fs.S3FileSystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return fs


@pytest.fixture(autouse=True)
def _short_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOISYCLEAN_READ_TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("NOISYCLEAN_READ_ATTEMPTS", "3")


@pytest.fixture(scope="module")
def images(example_rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """PER_CLASS train images of each of CLASSES from the committed example (id, file,
    label), labels as the manifest gives them."""
    taken: dict[str, int] = {}
    out = []
    for r in example_rows:
        if r["split"] != "train" or r["label"] not in CLASSES or r["label"] != r["true_label"]:
            continue
        if taken.get(r["label"], 0) >= PER_CLASS:
            continue
        taken[r["label"]] = taken.get(r["label"], 0) + 1
        out.append({"id": r["id"], "file": r["path"], "label": r["label"]})
    assert len(out) == len(CLASSES) * PER_CLASS
    return out


def _png(image: dict[str, str]) -> bytes:
    return (EXAMPLE_DIR / image["file"]).read_bytes()


def _score(manifest: str | Path, out: Path, cache: Path) -> list[str]:
    args = score_args(Path("MANIFEST"), out, cache, "--folds", "2", "--k", "3", "--epochs", "3")
    return [str(manifest) if a == "MANIFEST" else a for a in args]


class GetCounter:
    """Counts GET requests per path on the HTTP server (HEADs are not downloads)."""

    def __init__(self) -> None:
        self.gets: dict[str, int] = {}
        self.lock = threading.Lock()

    def serve(
        self, data: bytes, *, stall_first: bool = False, fail_first: int = 0
    ) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            if request.method == "GET":
                with self.lock:
                    n = self.gets[request.path] = self.gets.get(request.path, 0) + 1
                if stall_first and n == 1:
                    time.sleep(STALL)  # longer than TIMEOUT: the client gives up, then retries
                if n <= fail_first:
                    return Response("busy", status=503)
            return Response(data, content_type="image/png")

        return handler


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("s3://bucket/a/b.png", "s3://bucket/a/b.png"),
        (
            f"https://user:hunter2@example.com/a.png?{SIGNED_QUERY}#frag",
            "https://example.com/a.png?v=2",
        ),
        (
            "https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=x&X-Goog-Signature=s"
            "&GoogleAccessId=g&Expires=1&generation=7",
            "https://storage.googleapis.com/b/o.jpg?generation=7",
        ),
        (
            "https://acct.blob.core.windows.net/c/o.png?sv=2022&ss=b&srt=o&sp=r&se=2030"
            "&st=2020&spr=https&sig=abc%2Bdef",
            "https://acct.blob.core.windows.net/c/o.png",
        ),
        ("http://h:8080/x.png?Signature=a&AWSAccessKeyId=b&id=3", "http://h:8080/x.png?id=3"),
        ("s3://bucket/a#1.png", "s3://bucket/a#1.png"),  # '#' is part of a key
        ("images/a b?.png", "images/a b?.png"),  # a local path is left alone
    ],
)
def test_redact_strips_credentials(url: str, want: str) -> None:
    assert redact(url) == want
    u = URL(url) if "://" in url else None
    if u is not None:
        assert str(u) == repr(u)[1:-1] == want and u.as_written == url


def test_url_paths_resolve_like_folders() -> None:
    root = URL("s3://bkt/data/manifest.csv").parent
    assert root == "s3://bkt/data" and root.name == "data"
    assert root.joinpath("img/../x.png") == "s3://bkt/data/x.png"
    assert as_location(Path("s3://bkt/data")) == "s3://bkt/data"  # a URL through Path()
    assert as_location(Path("https://h:1/a/b")) == "https://h:1/a/b"
    assert isinstance(as_location("/tmp/x"), Path)


# --------------------------------------------------------------------------- reads


@pytest.mark.timeout(60)
def test_http_reads_retry_a_stall_and_a_503(httpserver: HTTPServer) -> None:
    png = _png({"file": "images/train/00011.png"})
    counter = GetCounter()
    httpserver.expect_request("/stall.png").respond_with_handler(
        counter.serve(png, stall_first=True)
    )
    httpserver.expect_request("/busy.png").respond_with_handler(counter.serve(png, fail_first=1))
    httpserver.expect_request("/down.png").respond_with_handler(counter.serve(png, fail_first=99))
    httpserver.expect_request("/nothing-here.png").respond_with_data("", status=404)
    started = time.perf_counter()
    assert read_bytes(URL(httpserver.url_for("/stall.png"))) == png
    assert TIMEOUT <= time.perf_counter() - started < STALL
    assert read_bytes(URL(httpserver.url_for("/busy.png"))) == png
    assert counter.gets == {"/stall.png": 2, "/busy.png": 2}
    with pytest.raises(SourceError, match="HTTP 503 after 3 attempts"):
        read_bytes(URL(httpserver.url_for("/down.png")))
    with pytest.raises(ObjectNotFoundError):
        read_bytes(URL(httpserver.url_for("/nothing-here.png")))


@pytest.mark.timeout(60)
def test_load_image_decodes_objects_as_it_decodes_files(s3: Any, httpserver: HTTPServer) -> None:
    image = {"file": "images/train/00011.png"}
    png = _png(image)
    s3.pipe_file(f"{BUCKET}/same/a.png", png)
    httpserver.expect_request("/a.png").respond_with_data(png, content_type="image/png")
    httpserver.expect_request("/text.png").respond_with_data(b"not an image at all")
    httpserver.expect_request("/gone.png").respond_with_data("", status=404)
    want = np.asarray(load_image(EXAMPLE_DIR / image["file"], 16))
    for source in (f"s3://{BUCKET}/same/a.png", httpserver.url_for("/a.png")):
        np.testing.assert_array_equal(np.asarray(load_image(source, 16)), want)
    with pytest.raises(UnreadableImageError, match="not an image"):
        load_image(httpserver.url_for("/text.png"))
    with pytest.raises(UnreadableImageError, match="unknown URL scheme 'nope://'"):
        load_image("nope://bucket/a.png")
    signed = httpserver.url_for("/gone.png").replace("://", "://u:hunter2@") + "?token=TOKEN0123"
    with pytest.raises(UnreadableImageError) as caught:
        load_image(signed)
    assert "no such object" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in SECRETS)


@pytest.mark.timeout(60)
def test_object_keys_follow_url_and_etag_not_credentials(s3: Any, httpserver: HTTPServer) -> None:
    s3.pipe_file(f"{BUCKET}/keys/a.png", b"one")
    httpserver.expect_request("/k.png").respond_with_data(b"abc")
    url = httpserver.url_for("/k.png")
    signed = url.replace("://", "://u:hunter2@") + "?" + SIGNED_QUERY
    keys, errors = url_keys(
        [URL(url), URL(signed), URL(f"s3://{BUCKET}/keys/a.png"), URL(f"s3://{BUCKET}/keys/no")]
    )
    assert list(errors) == [3] and isinstance(errors[3], FileNotFoundError)
    assert not np.array_equal(keys[0], keys[1])  # "?v=2" stays: another object
    stamp = stat_url(URL(f"s3://{BUCKET}/keys/a.png"))
    assert stamp.etag.startswith("ETag=") and stamp.size == 3
    s3.pipe_file(f"{BUCKET}/keys/a.png", b"two")
    again, _ = url_keys([URL(f"s3://{BUCKET}/keys/a.png")])
    assert not np.array_equal(again[0], keys[2])  # same size, new ETag: a new key
    plain, _ = url_keys([URL(url + "?v=2")])
    np.testing.assert_array_equal(plain[0], keys[1])  # the credentials are not in the key


# --------------------------------------------------------------------------- score end to end


@pytest.mark.timeout(240)
def test_score_a_remote_manifest_of_s3_and_http_objects(
    s3: Any,
    httpserver: HTTPServer,
    images: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    counter = GetCounter()
    rows = []
    for i, image in enumerate(images):
        if i % 2:
            name = f"/img/{image['id']}.png"
            httpserver.expect_request(name).respond_with_handler(counter.serve(_png(image)))
            path = httpserver.url_for(name)
        else:
            s3.pipe_file(f"{BUCKET}/e2e/img/{image['id']}.png", _png(image))
            path = f"img/{image['id']}.png"  # relative to the manifest's folder in S3
        rows.append({"id": image["id"], "path": path, "label": image["label"]})
    flaky = dict(rows[1], id="flaky", path=httpserver.url_for("/img/flaky.png"))
    httpserver.expect_request("/img/flaky.png").respond_with_handler(
        counter.serve(_png(images[1]), stall_first=True)
    )
    httpserver.expect_request("/img/text.png").respond_with_handler(
        counter.serve(b"<html>no</html>")
    )
    rows[3:3] = [
        dict(rows[0], id="missing", path=f"s3://{BUCKET}/e2e/img/gone.png"),
        dict(rows[1], id="not-an-image", path=httpserver.url_for("/img/text.png")),
        flaky,
    ]
    local = write_csv(tmp_path / "manifest.csv", rows)
    s3.put_file(str(local), f"{BUCKET}/e2e/manifest.csv")
    conf, cache = tmp_path / "conf.parquet", tmp_path / "cache"

    result = runner.invoke(app, _score(f"s3://{BUCKET}/e2e/manifest.csv", conf, cache))
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(conf)
    assert frame["id"].tolist() == [r["id"] for r in rows]  # every row, in manifest order
    status = dict(zip(frame["id"], frame["status"], strict=True))
    assert status.pop("missing") == "missing"
    assert status.pop("not-an-image") == "unreadable"
    assert set(status.values()) == {"ok"}  # the flaky one too
    assert frame.set_index("id").loc["flaky", "confidence"] > 0
    assert "not an image Pillow can read" in result.output
    meta = pq.read_schema(conf).metadata
    assert meta[b"manifest"] == f"s3://{BUCKET}/e2e/manifest.csv".encode()
    assert meta[b"manifest_dir"] == f"s3://{BUCKET}/e2e".encode()
    first = dict(counter.gets)
    assert first.pop("/img/flaky.png") == 2  # stalled, then read on the retry
    assert len(first) == len(images) // 2 + 1 and set(first.values()) == {1}  # once each

    # A rerun reads the features from the cache: one HEAD per object, no download, but
    # for the image that could not be used (failures are not cached).
    again = runner.invoke(
        app, _score(f"s3://{BUCKET}/e2e/manifest.csv", tmp_path / "2.parquet", cache)
    )
    assert again.exit_code == 0, again.output
    assert counter.gets == {**first, "/img/flaky.png": 2, "/img/text.png": 2}
    np.testing.assert_array_equal(
        pd.read_parquet(tmp_path / "2.parquet")["confidence"].to_numpy(),
        frame["confidence"].to_numpy(),
    )


# --------------------------------------------------------------------------- Parquet images


def _hf_metadata(names: list[str]) -> dict[bytes, bytes]:
    """The schema metadata ``datasets`` writes for an Image column and a ClassLabel."""
    features = {
        "image": {"_type": "Image"},
        "label": {"names": names, "_type": "ClassLabel"},
        "id": {"dtype": "string", "_type": "Value"},
    }
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


@pytest.mark.timeout(240)
def test_embedded_images_score_like_the_same_files(
    images: list[dict[str, str]], tmp_path: Path
) -> None:
    write_csv(
        tmp_path / "disk.csv",
        [
            {"id": r["id"], "path": str(EXAMPLE_DIR / r["file"]), "label": r["label"]}
            for r in images
        ],
    )
    names = sorted(CLASSES, reverse=True)  # ClassLabel order need not be sorted
    pngs = [_png(r) for r in images]
    hf = pa.table(
        {
            "id": [r["id"] for r in images],
            "image": pa.array(
                [
                    {"bytes": b, "path": Path(r["file"]).name}
                    for b, r in zip(pngs, images, strict=True)
                ],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": pa.array([names.index(r["label"]) for r in images], pa.int64()),
        }
    )
    pq.write_table(hf.replace_schema_metadata(_hf_metadata(names)), tmp_path / "hf.parquet")
    binary = pa.table(
        {
            "id": [r["id"] for r in images],
            "label": [r["label"] for r in images],
            "image": pa.array(pngs, pa.binary()),
        }
    )
    pq.write_table(binary, tmp_path / "binary.parquet")

    cache = tmp_path / "cache"
    confs = {}
    for name in ("disk.csv", "hf.parquet", "binary.parquet"):
        out = tmp_path / f"{name}.conf.parquet"
        result = runner.invoke(app, _score(tmp_path / name, out, cache))
        assert result.exit_code == 0, result.output
        confs[name] = pd.read_parquet(out)
    want = confs["disk.csv"]
    assert (want["status"] == "ok").all()
    for name in ("hf.parquet", "binary.parquet"):
        got = confs[name]
        assert got["label"].tolist() == want["label"].tolist()  # ClassLabel ints as names
        assert (got["status"] == "ok").all()
        np.testing.assert_allclose(got["confidence"], want["confidence"], atol=1e-5)
        np.testing.assert_allclose(
            np.stack(got["top_confidences"]), np.stack(want["top_confidences"]), atol=1e-5
        )
    assert confs["hf.parquet"]["path"].tolist() == [Path(r["file"]).name for r in images]
    assert confs["binary.parquet"]["path"].tolist() == [f"binary.parquet#{r['id']}" for r in images]

    # The cache keys embedded images by their bytes: the same bytes, the same key.
    m_hf, m_bin = load_manifest(tmp_path / "hf.parquet"), load_manifest(tmp_path / "binary.parquet")
    rows = np.arange(len(images))
    np.testing.assert_array_equal(m_hf.sources.keys(rows)[0], m_bin.sources.keys(rows)[0])

    # apply keeps the images, the metadata and the ClassLabel coding.
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(
        f"id,decision,new_label\n{images[0]['id']},relabel,Sandal\n{images[1]['id']},drop,\n"
    )
    apply_decisions(tmp_path / "hf.parquet", decisions, tmp_path / "clean.parquet")
    clean = pq.read_table(tmp_path / "clean.parquet")
    assert clean.schema.metadata[b"huggingface"] == _hf_metadata(names)[b"huggingface"]
    assert clean.column("label").type == pa.int64()
    assert clean.column("label")[0].as_py() == names.index("Sandal")
    assert clean.column("image").type == hf.column("image").type
    assert clean.num_rows == len(images) - 1
    assert clean.column("image")[1]["bytes"].as_py() == pngs[2]
    with pytest.raises(Exception, match="CSV can't hold"):
        apply_decisions(tmp_path / "hf.parquet", decisions, tmp_path / "clean.csv")


def test_image_columns_and_class_labels(tmp_path: Path) -> None:
    # An 'image' column of something else than bytes is an ordinary column.
    ints = pa.table({"path": ["a.png", "b.png"], "label": ["a", "b"], "image": [1, 2]})
    pq.write_table(ints, tmp_path / "ints.parquet")
    m = load_manifest(tmp_path / "ints.parquet")
    assert m.frame["image"].tolist() == [1, 2] and m.embedded.images is None
    pq.write_table(ints.drop_columns(["path"]), tmp_path / "no-path.parquet")
    with pytest.raises(ManifestError, match=r"no-path\.parquet: no 'path' column"):
        load_manifest(tmp_path / "no-path.parquet")
    table = pa.table({"label": [0, 5], "image": pa.array([b"x", b"y"])})
    pq.write_table(table.replace_schema_metadata(_hf_metadata(["a", "b"])), tmp_path / "cl.parquet")
    with pytest.raises(ManifestError, match=r"cl.parquet row 2: label 5 is not a ClassLabel index"):
        load_manifest(tmp_path / "cl.parquet")
    # A row with neither bytes nor a path is kept, and missing.
    image = pa.array(
        [{"bytes": b"x", "path": None}, None],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"label": ["a", "b"], "image": image}), tmp_path / "hole.parquet")
    m = load_manifest(tmp_path / "hole.parquet")
    assert m.frame["status"].tolist() == ["ok", "missing"]
    assert m.frame["path"].tolist() == ["hole.parquet#0", "hole.parquet#1"]


# --------------------------------------------------------------------------- credentials


@pytest.mark.timeout(300)
def test_signed_urls_are_never_stored(
    httpserver: HTTPServer, images: list[dict[str, str]], tmp_path: Path
) -> None:
    rows = []
    for image in images:
        name = f"/signed/{image['id']}.png"
        httpserver.expect_request(name).respond_with_data(_png(image), content_type="image/png")
        url = httpserver.url_for(name).replace("://", "://reader:hunter2@") + "?" + SIGNED_QUERY
        rows.append({"id": image["id"], "path": url, "label": image["label"]})
    httpserver.expect_request("/signed/gone.png").respond_with_data("", status=404)
    gone = httpserver.url_for("/signed/gone.png").replace("://", "://u:hunter2@")
    rows.append(dict(rows[0], id="gone", path=f"{gone}?{SIGNED_QUERY}"))
    manifest = write_csv(tmp_path / "manifest.csv", rows)
    conf, cache, run, page = (tmp_path / n for n in ("conf.parquet", "cache", "run", "review.html"))

    scored = runner.invoke(app, _score(manifest, conf, cache))
    assert scored.exit_code == 0, scored.output
    frame = pd.read_parquet(conf)
    assert frame["status"].tolist() == ["ok"] * len(images) + ["missing"]
    assert all(p.endswith("?v=2") and "@" not in p for p in frame["path"])
    trained = runner.invoke(
        app,
        ["train", "-w", str(conf), "-o", str(run), "--epochs", "2", "--embedding-dim", "8",
         "--device", "cpu", "--top", "5", "--k", "3"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    reviewed = runner.invoke(app, ["review", str(run), "-o", str(page), "--top", "4"])
    assert reviewed.exit_code == 0, reviewed.output
    assert "data:image/" in page.read_text()  # thumbnails of the objects were read

    outputs = [conf, page, *run.iterdir(), *cache.rglob("*")]
    for path in outputs:
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in SECRETS if s.encode() in data]
            assert not leaked, f"{path} holds {leaked}"
    for text in (scored.output, trained.output, reviewed.output):
        assert not any(s in text for s in SECRETS)


# --------------------------------------------------------------------------- apply, remote


@pytest.mark.timeout(120)
def test_apply_reads_and_writes_manifests_in_s3(s3: Any, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "path": "img/a.png", "label": "cat"},
        {"id": "b", "path": "img/b.png", "label": "dog"},
        {"id": "c", "path": "img/c.png", "label": "dog"},
    ]
    s3.put_file(str(write_csv(tmp_path / "m.csv", rows)), f"{BUCKET}/apply/m.csv")
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("id,decision,new_label\nb,relabel,cat\nc,drop,\n")
    summary = apply_decisions(
        f"s3://{BUCKET}/apply/m.csv", decisions, f"s3://{BUCKET}/apply/clean.csv"
    )
    assert str(summary.dropped_path) == f"s3://{BUCKET}/apply/clean.dropped.csv"
    clean = pd.read_csv(io.BytesIO(s3.cat_file(f"{BUCKET}/apply/clean.csv")))
    dropped = pd.read_csv(io.BytesIO(s3.cat_file(f"{BUCKET}/apply/clean.dropped.csv")))
    assert clean["label"].tolist() == ["cat", "cat"] and dropped["id"].tolist() == ["c"]
    assert not summary.warnings  # same folder: relative paths still resolve
    result = runner.invoke(
        app,
        ["apply", f"s3://{BUCKET}/apply/m.csv", str(decisions), "-o", f"s3://{BUCKET}/apply/m.csv"],
    )
    assert result.exit_code == 1 and "would overwrite the manifest" in result.output
    missing = runner.invoke(
        app,
        ["apply", f"s3://{BUCKET}/apply/nope.csv", str(decisions), "-o", str(tmp_path / "o.csv")],
    )
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert "Traceback" not in missing.output


# --------------------------------------------------------------------------- without the extra


@pytest.mark.timeout(120)
def test_local_runs_need_no_remote_extra_and_urls_name_it(tmp_path: Path) -> None:
    """With s3fs, gcsfs and aiohttp made unimportable, local manifests still load and key,
    and a URL fails in one line naming the extra."""
    code = f"""
import sys
for name in ("s3fs", "gcsfs", "aiohttp"):
    sys.modules[name] = None
import numpy as np
from noisyclean.manifest import load_manifest
from noisyclean.images import load_image
from noisyclean.errors import NoisyCleanError
from noisyclean.sources import URL, read_bytes
m = load_manifest({str(EXAMPLE_DIR / "manifest.csv")!r})
keys, errors = m.sources.keys(np.arange(5))
assert not errors and keys.all()
load_image(m.sources[0], 16)
for url in ("s3://b/k.png", "https://h/x.png"):
    try:
        read_bytes(URL(url))
    except NoisyCleanError as err:
        print(err)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("pip install 'noisyclean[remote]'" in line for line in lines), lines
