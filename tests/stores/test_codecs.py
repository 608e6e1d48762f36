"""avfix's own Zarr v3 codecs (stores.codecs): frames as one JPEG per frame, flow in fixed steps.

They must read as plain uint8 / float16 arrays through zarr and xarray, write byte for byte what the
direct chunk writer writes (and back), stay deterministic (reruns equal uninterrupted runs) and stay
covered by the chunks' CRC32C."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import chunk_files as conftest_chunk_files
from zarr.codecs import GzipCodec

from stores import codecs, zarr_io
from stores import features as fstore
from stores.chunks import ChunkError, DirectChunks, ZarrRows, crc32c, rows_of
from stores.integrity import verify_store

REPO = Path(__file__).resolve().parents[2]


def photo_like(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a moving edge: what JPEG is made for (noise would not reach 40 dB)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        base = np.stack([xx / w * 200, yy / h * 180, (xx + yy) / (h + w) * 220], axis=-1) + rng.uniform(0, 30, 3)
        base[:, : 10 + 3 * t] *= 0.5
        out[t] = np.clip(base, 0, 255).astype(np.uint8)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def video_group(store: Path) -> zarr.Group:
    root = zarr_io.open_root(store, mode="a")
    return root["videos"].create_group("v")


def make_arrays(store: Path, n: int = 20, flow_step: float = 1 / 32) -> zarr.Group:
    group = video_group(store)
    chosen = fstore.encodings("jpeg", 95, "444", flow_step)
    zarr_io.create_array(group, fstore.FRAMES, (n, 48, 64, 3), chosen[fstore.FRAMES.name])
    zarr_io.create_array(group, fstore.FLOW, (n, 2, 6, 8), chosen.get(fstore.FLOW.name))
    return group


def chunk_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in conftest_chunk_files(store)}


def test_jpeg_frames_read_as_uint8_through_zarr_and_xarray_close_to_the_originals(tmp_path):
    store = tmp_path / "s.zarr"
    group = make_arrays(store)
    frames = photo_like(20)
    group["frames"][:] = frames
    zarr_io.consolidate(store)
    back = zarr.open_array(str(store / "videos/v/frames"), mode="r")[:]
    assert back.dtype == np.uint8 and back.shape == frames.shape
    assert psnr(back, frames) > 40
    assert not np.array_equal(back, frames)  # lossy indeed
    lazy = xr.open_zarr(str(store), group="videos/v")["frames"]
    assert lazy.dims == ("t", "y", "x", "c") and lazy.dtype == np.uint8
    np.testing.assert_array_equal(lazy.values, back)


def test_each_frame_of_a_chunk_is_a_standalone_jpeg(tmp_path):
    frames = photo_like(3)
    data = codecs.encode_jpeg_frames(frames, 95, "444")
    count = int(np.frombuffer(data[:4], "<u4")[0])
    lengths = np.frombuffer(data[4 : 4 * (count + 1)], "<u4")
    assert count == 3 and 4 * (count + 1) + lengths.sum() == len(data)
    second = np.frombuffer(data[4 * (count + 1) + lengths[0] :][: lengths[1]], np.uint8)
    decoded = cv2.cvtColor(cv2.imdecode(second, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # any JPEG reader
    assert psnr(decoded, frames[1]) > 40


def test_direct_chunks_write_what_zarr_writes_and_read_what_it_reads(tmp_path):
    frames = photo_like(20)
    flow = np.random.default_rng(4).normal(0, 6, (20, 2, 6, 8)).astype(np.float16)
    through_zarr = make_arrays(tmp_path / "z.zarr")
    through_zarr["frames"][:] = frames
    through_zarr["flow"][:] = flow
    direct = make_arrays(tmp_path / "d.zarr")
    for name, values in (("frames", frames), ("flow", flow)):
        writer = rows_of(direct[name])
        assert isinstance(writer, DirectChunks)
        writer.write(0, values[:16])
        writer.write(16, values[16:])  # the last chunk is short: stored padded
    assert chunk_files(tmp_path / "z.zarr") == chunk_files(tmp_path / "d.zarr")
    for name in ("frames", "flow"):
        reader = rows_of(through_zarr[name])
        assert isinstance(reader, DirectChunks) and reader.checksum
        np.testing.assert_array_equal(reader.read_rows(0, 20), np.asarray(direct[name][:]))


def test_jpeg_encoding_is_deterministic():
    frames = photo_like(5, seed=7)
    assert codecs.encode_jpeg_frames(frames, 95, "444") == codecs.encode_jpeg_frames(frames.copy(), 95, "444")


def test_flow_steps_round_to_the_step_and_clip_instead_of_wrapping(tmp_path):
    group = make_arrays(tmp_path / "s.zarr", n=4)
    flow = np.zeros((4, 2, 6, 8), dtype=np.float16)  # one chunk
    flow[0, 0, 0, :4] = [0.01, 0.02, -1.5, 3.3]
    flow[1, 0, 0, :2] = [1500.0, -1500.0]  # beyond int16 x 32: clipped to ±1023.97, not wrapped around
    rows_of(group["flow"]).write(0, flow)
    back = zarr.open_array(str(tmp_path / "s.zarr/videos/v/flow"), mode="r")[:]
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back[0, 0, 0, :4], np.float16([0.0, 0.03125, -1.5, 3.3125]))
    np.testing.assert_allclose(back[1, 0, 0, :2], [32767 / 32, -32768 / 32], rtol=1e-3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("step", [1 / 32, 0.1])
def test_flow_steps_equal_numpys_float32_rounding_and_leave_the_input_alone(dtype, step):
    rng = np.random.default_rng(3)
    values = (rng.standard_normal((3, 2, 9, 9)) * 3000 * step).astype(dtype)
    ties_and_beyond = np.array([0.5, 1.5, -0.5, -2.5, 40000, -40000]) * step  # half to even; clipped
    values.flat[:6] = ties_and_beyond.astype(dtype)
    kept = values.copy()
    expected = np.clip(np.round(values.astype(np.float32) / np.float32(step)), -32768, 32767).astype("<i2")
    got = codecs.to_steps(values, step)
    assert got.dtype == np.dtype("<i2") and got.shape == values.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(values, kept)


def test_lossless_frames_and_float_flow_stay_available():
    chosen = fstore.encodings("lossless", flow_step=0.0)
    assert chosen == {}  # the default: uint8 / float16 + zstd + crc32c
    with pytest.raises(ValueError, match="unknown frame codec 'png'"):
        fstore.encodings("png")


def test_jpeg_chunks_are_checked_by_their_checksum_and_by_decoding(tmp_path):
    store = tmp_path / "s.zarr"
    group = make_arrays(store)
    group["frames"][:] = photo_like(20)
    reader = rows_of(group["frames"])
    path = reader.path(1)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChunkError, match="chunk 1: damaged: checksum mismatch"):
        reader.read(1)
    # A chunk whose checksum matches but whose JPEGs do not decode to the array's frames.
    bad = codecs.encode_jpeg_frames(photo_like(4, h=16, w=16), 95, "444")
    reader.path(0).write_bytes(bad + crc32c(bad))
    with pytest.raises(ChunkError, match=r"chunk 0: damaged: JPEG chunk holds 4 frames, expected 16"):
        reader.read(0)


def test_verify_covers_jpeg_frames(tmp_path, video_factory):
    from pipeline.common.scheduling import SchedulerConfig
    from pipeline.extract.config import ExtractConfig
    from pipeline.extract.run import run_extract

    source = tmp_path / "in" / "cat"
    source.mkdir(parents=True)
    video = video_factory("a.mp4", n_frames=20, fps=10, size=(64, 48))
    os.symlink(video.path, source / "a.mp4")
    run_extract(tmp_path / "in", tmp_path / "ws", ExtractConfig(size=32), SchedulerConfig(workers=1))
    store = tmp_path / "ws" / "features.zarr"
    assert verify_store(store, mark=False).damaged == {}
    frames = zarr_io.open_root(store)["videos/a/frames"]
    assert isinstance(frames.metadata.codecs[0], codecs.JpegFramesCodec)
    chunk = rows_of(frames).path(0)
    chunk.write_bytes(chunk.read_bytes()[:-5] + b"\0" + chunk.read_bytes()[-4:])
    found = verify_store(store, mark=False)
    assert "array frames, chunk 0: damaged: checksum mismatch" in found.damaged["a"]


def test_other_layouts_fall_back_to_zarr_and_say_so_once(tmp_path, caplog):
    from stores import chunks

    chunks._FALLBACKS_LOGGED.clear()
    group = video_group(tmp_path / "g.zarr")
    arrays = [group.create_array(name, shape=(8, 4), chunks=(4, 4), dtype="uint8", compressors=(GzipCodec(),))
              for name in ("a", "b")]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="stores.chunks"):
        readers = [rows_of(array) for array in arrays]
    assert all(isinstance(reader, ZarrRows) for reader in readers)
    warnings = [r.getMessage() for r in caplog.records if r.name == "stores.chunks"]
    assert len(warnings) == 1 and "codecs bytes -> gzip not read directly" in warnings[0]
    assert "through zarr instead" in warnings[0]
    store_check = verify_store_arrays(group)
    assert store_check == ["videos/v/a", "videos/v/b"]


def verify_store_arrays(group: zarr.Group) -> list[str]:
    from stores.integrity import StoreCheck, _check_video

    check = StoreCheck("g")
    assert _check_video(group, check) is None
    return check.unchecked


def test_a_fresh_zarr_finds_the_codecs_through_the_entry_point(tmp_path):
    """What a notebook with avfix installed does: plain zarr, no `import stores` (the declaration in
    pyproject.toml is installed as this dist-info's entry points)."""
    store = tmp_path / "s.zarr"
    group = make_arrays(store)
    group["frames"][:] = photo_like(20)
    group["flow"][:] = np.full((20, 2, 6, 8), 1.25, np.float16)
    site = tmp_path / "site"
    info = site / "avfix_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: avfix-entry-points\nVersion: 0\n")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["zarr.codecs"]
    assert set(declared) == {codecs.JPEG_CODEC, codecs.FIXED_STEP_CODEC}
    lines = [f"{name} = {target}" for name, target in declared.items()]
    (info / "entry_points.txt").write_text("\n".join(["[zarr.codecs]", *lines, ""]))
    script = textwrap.dedent(f"""
        import sys
        import zarr
        frames = zarr.open_array({str(store / "videos/v/frames")!r}, mode="r")[:]
        flow = zarr.open_array({str(store / "videos/v/flow")!r}, mode="r")[:]
        assert "stores" in sys.modules  # imported by zarr, through the entry point, not by this script
        print(frames.dtype, frames.shape, flow.dtype, float(flow.max()))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["uint8", "(20,", "48,", "64,", "3)", "float16", "1.25"]


def test_chunk_cache_decodes_only_the_jpeg_frames_asked_for(tmp_path):
    from stores.datasets import ChunkCache

    store = tmp_path / "s.zarr"
    group = make_arrays(store)
    group["frames"][:] = photo_like(20)
    expected = np.asarray(group["frames"][:])
    cache = ChunkCache(store)
    np.testing.assert_array_equal(cache.read("v", "frames", 15), expected[15])
    np.testing.assert_array_equal(cache.read("v", "frames", 16), expected[16])  # the next chunk's first frame
    first, second = cache._chunks[("v", "frames", 0)], cache._chunks[("v", "frames", 1)]
    assert first.decoded.tolist() == [False] * 15 + [True] and second.decoded.sum() == 1
    np.testing.assert_array_equal(np.stack([cache.read("v", "frames", t) for t in range(20)]), expected)
    # A frame that does not decode raises ChunkError when it is asked for, like a whole read.
    bad = bytearray(codecs.encode_jpeg_frames(photo_like(16), 95, "444"))
    header = 4 * 17
    bad[header + 2 : header + 40] = b"\0" * 38  # the first JPEG's headers
    rows_of(group["frames"]).path(0).write_bytes(bytes(bad) + crc32c(bytes(bad)))
    with pytest.raises(ChunkError, match=r"chunk 0: damaged: frame 0 of a JPEG chunk does not decode"):
        ChunkCache(store).read("v", "frames", 0)
