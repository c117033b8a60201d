"""noisyclean.features' cache on its own: shards, the key index and its join, file keys."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import noisyclean.features as features
import noisyclean.sources as sources
from noisyclean.features import FeatureCache, file_keys

DIM = 7


def _keys(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)


def _cache(tmp_path: Path) -> FeatureCache:
    return FeatureCache(tmp_path / "cache", "some-backbone", 32)


def _reference(shards: list[tuple[np.ndarray, np.ndarray]]) -> dict[bytes, list[np.ndarray]]:
    """Key -> every vector stored under it, the way a dict per row would have it."""
    ref: dict[bytes, list[np.ndarray]] = {}
    for keys, vectors in shards:
        for k, v in zip(keys, vectors, strict=True):
            ref.setdefault(k.tobytes(), []).append(v)
    return ref


def test_lookup_across_shards_equals_a_dict_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cache = _cache(tmp_path)
    shards = []
    for n in (5, 1, 40, 17, 0, 23):
        keys, vectors = _keys(rng, n), rng.standard_normal((n, DIM)).astype(np.float32)
        shards.append((keys, vectors))
    # The same image cached twice (a rerun after a crash): same key, same vector, two shards;
    # and one key stored twice within a shard.
    again = shards[2][0][[3, 7]], shards[2][1][[3, 7]]
    shards.append(
        (np.concatenate([again[0], again[0][:1]]), np.concatenate([again[1], again[1][:1]]))
    )
    for keys, vectors in shards:
        cache.add(keys, vectors)
    stored = np.concatenate([k for k, _ in shards])
    query = np.concatenate([stored[rng.permutation(len(stored))[:60]], _keys(rng, 15), stored[:4]])
    query = query[rng.permutation(len(query))]
    # A key one of whose two halves is cached under another key: not found.
    query = np.concatenate([query, [[stored[0, 0], stored[1, 1]]]]).astype(np.uint64)

    values, found = cache.load(query)

    ref = _reference(shards)
    assert values.shape == (len(query), DIM) and values.dtype == np.float32
    for q, v, hit in zip(query, values, found, strict=True):
        if q.tobytes() in ref:
            assert hit
            assert any(np.array_equal(v, w) for w in ref[q.tobytes()])  # bit for bit
        else:
            assert not hit and not v.any()
    assert 0 < found.sum() < len(query)


def test_conflicting_duplicates_give_one_of_the_vectors(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    key = np.array([[1, 2]], dtype=np.uint64)
    first, second = np.full((1, DIM), 1.0), np.full((1, DIM), 2.0)
    cache.add(key, first)
    cache.add(key, second)
    values, found = cache.load(np.repeat(key, 3, axis=0))
    assert found.all()
    assert all(np.array_equal(v, first[0]) or np.array_equal(v, second[0]) for v in values)


def test_an_empty_or_absent_cache_finds_nothing(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    values, found = cache.load(_keys(np.random.default_rng(1), 3))
    assert values.shape == (3, 0) and not found.any()
    cache.add(np.zeros((0, 2), dtype=np.uint64), np.zeros((0, DIM)))
    values, found = cache.load(np.zeros((0, 2), dtype=np.uint64))
    assert values.shape == (0, DIM) and not found.any()


def test_each_add_writes_one_shard_of_memory_mappable_files(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    keys, vectors = _keys(np.random.default_rng(2), 4), np.arange(4 * DIM).reshape(4, DIM)
    cache.add(keys, vectors)
    (keys_file,) = cache.dir.glob("shard-*.keys.npy")
    (features_file,) = cache.dir.glob("shard-*.features.npy")
    assert keys_file.name.removesuffix(".keys.npy") == features_file.name.removesuffix(
        ".features.npy"
    )
    mapped = np.load(features_file, mmap_mode="r")
    assert mapped.dtype == np.float32 and mapped.shape == (4, DIM)
    np.testing.assert_array_equal(mapped, vectors)
    np.testing.assert_array_equal(np.load(keys_file), keys)
    assert sorted(p.name for p in cache.dir.iterdir() if "shard-" not in p.name) == ["spec.json"]


@pytest.mark.parametrize(
    "damage",
    [
        "no keys file",
        "keys cut short",
        "keys header only",
        "empty keys",
        "features cut short",
        "no features file",
        "row counts differ",
        "another feature length",
    ],
)
def test_a_half_written_or_damaged_shard_is_ignored(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(3)
    cache = _cache(tmp_path)
    good, bad = _keys(rng, 6), _keys(rng, 5)
    cache.add(good, rng.standard_normal((6, DIM)))
    before = {p.name for p in cache.dir.iterdir()}
    cache.add(bad, rng.standard_normal((5, DIM)))
    (keys_file,) = (p for p in cache.dir.glob("shard-*.keys.npy") if p.name not in before)
    features_file = keys_file.with_name(keys_file.name.replace(".keys.", ".features."))
    data = keys_file.read_bytes()
    if damage == "no keys file":  # killed between the two files
        keys_file.unlink()
    elif damage == "keys cut short":
        keys_file.write_bytes(data[:-5])
    elif damage == "keys header only":
        keys_file.write_bytes(data[: len(data) - bad.nbytes])
    elif damage == "empty keys":
        keys_file.write_bytes(b"")
    elif damage == "features cut short":
        features_file.write_bytes(features_file.read_bytes()[:-1])
    elif damage == "no features file":
        features_file.unlink()
    elif damage == "row counts differ":
        np.save(keys_file, bad[:4])
    else:
        np.save(features_file, rng.standard_normal((5, DIM + 1)).astype(np.float32))
    index = cache.index()
    assert len(index.shards) == 1 and index.dim == DIM
    _, found = cache.load(np.concatenate([good, bad]))
    assert found.tolist() == [True] * 6 + [False] * 5


def test_a_failed_write_leaves_no_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _cache(tmp_path)
    real = features._save_atomically
    written: list[str] = []

    def die_on_keys(path: Path, array: np.ndarray) -> None:
        written.append(path.name)
        if path.name.endswith(".keys.npy"):
            raise KeyboardInterrupt
        real(path, array)

    monkeypatch.setattr(features, "_save_atomically", die_on_keys)
    with pytest.raises(KeyboardInterrupt):
        cache.add(_keys(np.random.default_rng(4), 2), np.ones((2, DIM)))
    assert [n.split(".", 1)[1] for n in written] == ["features.npy", "keys.npy"]
    assert cache.index().shards == []
    assert len(list(cache.dir.glob("shard-*.features.npy"))) == 1


def test_a_shard_removed_after_the_lookup_is_not_found(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    cache = _cache(tmp_path)
    a, b = _keys(rng, 3), _keys(rng, 2)
    cache.add(a, np.ones((3, DIM)))
    cache.add(b, np.full((2, DIM), 2.0))
    index = cache.index()
    query = np.concatenate([a, b])
    where = index.find(query)
    assert (where >= 0).all()
    removed = index.shards[0]
    removed.unlink()
    out = np.zeros((5, DIM), dtype=np.float32)
    done = index.gather(where, out)
    gone = np.isin(where, np.arange(index.offsets[0], index.offsets[1]))
    assert done.tolist() == (~gone).tolist() and not out[gone].any()


def test_file_keys_follow_path_size_and_mtime(tmp_path: Path) -> None:
    for name in "abc":
        (tmp_path / name).write_bytes(b"12345")
    st = (tmp_path / "a").stat()
    os.utime(tmp_path / "b", ns=(st.st_atime_ns, st.st_mtime_ns))
    paths = [tmp_path / "a", tmp_path / "b", tmp_path / "gone", tmp_path / "a", tmp_path / "c"]
    keys, errors = file_keys(paths)
    assert keys.shape == (5, 2) and keys.dtype == np.uint64
    assert list(errors) == [2] and isinstance(errors[2], FileNotFoundError)
    assert (keys[2] == 0).all()
    np.testing.assert_array_equal(keys[0], keys[3])  # the same file, the same key
    assert len({k.tobytes() for k in keys[[0, 1, 4]]}) == 3  # same size and mtime, other path
    assert keys[0, 0] != keys[0, 1]  # two independent halves
    # Same path and size, another mtime: another key.
    os.utime(tmp_path / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not np.array_equal(file_keys([tmp_path / "a"])[0][0], keys[0])
    # Nothing to stat.
    empty, none = file_keys([])
    assert empty.shape == (0, 2) and none == {}


def test_file_keys_in_threads_equal_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(9):
        (tmp_path / f"{i}.png").write_bytes(b"x" * i)
    paths = [tmp_path / f"{i}.png" for i in range(9)] + [tmp_path / "gone.png"]
    alone, alone_errors = file_keys(paths)
    pools: list[int] = []

    class Pool(sources.ThreadPoolExecutor):
        def __init__(self, workers: int) -> None:
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(sources, "ThreadPoolExecutor", Pool)
    monkeypatch.setattr(sources, "STAT_CHUNK", 2)
    assert np.array_equal(file_keys(paths)[0], alone) and pools == []  # a fast disk: one thread
    monkeypatch.setattr(sources, "SLOW_STAT_SECONDS", -1.0)  # every disk is slow
    threaded, threaded_errors = file_keys(paths)
    assert pools == [4]  # 8 files after the first 2, 2 a task
    np.testing.assert_array_equal(threaded, alone)
    assert list(threaded_errors) == list(alone_errors) == [9]


def test_an_odd_file_name_has_a_key(tmp_path: Path) -> None:
    odd = tmp_path / os.fsdecode(b"caf\xe9 \xff.png")  # not UTF-8: a surrogate-escaped str
    odd.write_bytes(b"x")
    keys, errors = file_keys([odd])
    assert errors == {} and keys.any()


def test_precision_is_part_of_the_cache_key(tmp_path: Path) -> None:
    full = FeatureCache(tmp_path / "cache", "some-backbone", 32)
    half = FeatureCache(tmp_path / "cache", "some-backbone", 32, "bfloat16")
    assert full.dir != half.dir
    keys = np.array([[1, 2]], dtype=np.uint64)
    half.add(keys, np.ones((1, 4), dtype=np.float32))
    assert (full.index().find(keys) == -1).all()  # autocast features never serve float32
    assert (half.index().find(keys) >= 0).all()
    # float32 folders keep their earlier name: existing caches stay valid.
    assert full.dir == FeatureCache(tmp_path / "cache", "some-backbone", 32, "float32").dir
