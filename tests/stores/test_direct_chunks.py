"""Direct chunk reads and writes of avfix's own layout give exactly what zarr reads and writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from stores import zarr_io
from stores.chunks import DirectChunks
from stores.datasets import ChunkCache
from stores.zarr_io import ArraySpec


def test_direct_chunks_equal_zarr_reads_including_the_last_chunk(tmp_path):
    root = zarr_io.open_root(tmp_path / "s.zarr", mode="a")
    group = root["videos"].create_group("v")
    rng = np.random.default_rng(0)
    frames = zarr_io.create_array(group, ArraySpec("frames", ("t", "y", "x", "c"), "uint8", 4), (10, 6, 5, 3))
    frames[:] = rng.integers(0, 255, (10, 6, 5, 3), dtype=np.uint8)
    maps = zarr_io.create_array(group, ArraySpec("maps", ("t", "y", "x"), "float16", 4, fill_value=0.5), (10, 7, 7))
    maps[:] = rng.random((10, 7, 7)).astype(np.float16)
    maps[4:8] = 0.5  # an all-fill chunk is written too (a missing one is damage)
    for name in ("frames", "maps"):
        array = group[name]
        direct = DirectChunks.for_array(tmp_path / "s.zarr", array)
        assert direct is not None and direct.checksum
        for index in range(3):
            got = direct.read(index)
            expected = np.asarray(array[index * 4 : index * 4 + 4])
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(direct.read_rows(3, 9), np.asarray(array[3:9]))
    assert (tmp_path / "s.zarr/videos/v/maps/c.1.0.0").is_file()  # flat keys: no folder per chunk


def test_nested_chunk_keys_of_stores_written_before_are_read_and_written_as_zarr_does(tmp_path):
    group = zarr.open_group(str(tmp_path / "nested.zarr"), mode="w")
    array = group.create_array("flow", shape=(10, 2, 3), chunks=(4, 2, 3), dtype="float16",
                               compressors=zarr_io.codecs(3))  # zarr's default keys: "c/1/0/0"  # fmt: skip
    values = np.random.default_rng(3).standard_normal((10, 2, 3)).astype(np.float16)
    array[:] = values
    direct = DirectChunks.for_array(tmp_path / "nested.zarr", array)
    assert direct is not None and direct.separator == "/" and direct.checksum
    np.testing.assert_array_equal(direct.read_rows(0, 10), values)
    direct.write(4, values[:4][::-1].copy())  # chunk 1 rewritten directly, in its nested folder
    assert direct.path(1) == tmp_path / "nested.zarr/flow/c/1/0/0" and direct.path(1).is_file()
    np.testing.assert_array_equal(np.asarray(array[4:8]), values[:4][::-1])
    flat = zarr_io.create_array(zarr_io.open_root(tmp_path / "flat.zarr", mode="a")["videos"].create_group("v"),
                                ArraySpec("flow", ("t", "c", "y"), "float16", 4), (10, 2, 3))  # fmt: skip
    flat[:] = values
    assert sorted(p.name for p in (tmp_path / "flat.zarr/videos/v/flow").iterdir()) == [
        "c.0.0.0", "c.1.0.0", "c.2.0.0", "zarr.json"]  # fmt: skip


def test_arrays_of_an_earlier_avfix_without_checksums_still_read(tmp_path):
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    array = group.create_array("frames", shape=(6, 2), chunks=(4, 2), dtype="uint8", compressors=zarr_io.compressor())
    array[:4] = np.arange(8, dtype=np.uint8).reshape(4, 2)  # chunk 1 never written: the fill value, as zarr reads it
    direct = DirectChunks.for_array(tmp_path / "old.zarr", array)
    assert direct is not None and not direct.checksum
    np.testing.assert_array_equal(direct.read_rows(0, 6), np.asarray(array[:]))


def test_other_layouts_are_read_through_zarr(tmp_path):
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="w")
    blosc = group.create_array("a", shape=(8, 4), chunks=(4, 4), dtype="uint8", compressors=BloscCodec())
    blosc[:] = np.arange(32, dtype=np.uint8).reshape(8, 4)
    split = group.create_array("b", shape=(8, 4), chunks=(4, 2), dtype="uint8", compressors=zarr_io.compressor())
    assert DirectChunks.for_array(tmp_path / "o.zarr", blosc) is None
    assert DirectChunks.for_array(tmp_path / "o.zarr", split) is None


def test_chunk_cache_reads_frames_the_same_either_way(tmp_path, monkeypatch):
    root = zarr_io.open_root(tmp_path / "s.zarr", mode="a")
    group = root["videos"].create_group("v")
    frames = zarr_io.create_array(group, ArraySpec("frames", ("t", "y", "x", "c"), "uint8", 4), (9, 4, 4, 3))
    frames[:] = np.random.default_rng(1).integers(0, 255, (9, 4, 4, 3), dtype=np.uint8)
    fast = [ChunkCache(tmp_path / "s.zarr").read("v", "frames", t) for t in range(9)]
    monkeypatch.setattr(DirectChunks, "for_array", classmethod(lambda cls, store, array: None))
    slow = [ChunkCache(tmp_path / "s.zarr").read("v", "frames", t) for t in range(9)]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_direct_writes_read_back_through_zarr_and_refuse_partial_chunks(tmp_path):
    root = zarr_io.open_root(tmp_path / "w.zarr", mode="a")
    group = root["videos"].create_group("v")
    array = zarr_io.create_array(group, ArraySpec("flow", ("t", "c", "y", "x"), "float16", 4), (10, 2, 3, 3))
    writer = DirectChunks.for_array(tmp_path / "w.zarr", array)
    values = np.random.default_rng(2).standard_normal((10, 2, 3, 3)).astype(np.float16)
    writer.write(0, values[:8])
    writer.write(8, values[8:])  # the last chunk is short: stored padded, read back cut
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "w.zarr"), mode="r")["videos/v/flow"][:], values)
    with pytest.raises(ValueError, match="rows 2:6 are not whole chunks of 4 of an array of 10"):
        writer.write(2, values[2:6])


def test_float16_conversion_matches_numpy_and_gives_c_order():
    from stores.features import to_float16

    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.normal(0, 3, 5000), rng.normal(0, 1e-6, 500), [65504.0, 65520.0, -1e6, 6e-8, 2.9e-8, 0.0, -0.0, np.inf],
    ]).astype(np.float32)  # fmt: skip
    strided = np.resize(values, (2, 3, 1001)).transpose(2, 0, 1)  # not C-contiguous, like a transposed flow
    got = to_float16(strided)
    assert got.dtype == np.float16 and got.flags["C_CONTIGUOUS"] and got.shape == strided.shape
    with np.errstate(over="ignore"):  # numpy warns where values overflow to inf, as torch does silently
        expected = strided.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
