"""Integrity you can check: a missing, flipped or truncated chunk of a complete video is found and
named (store, video, array, chunk) by readers and by `avfix verify`, and the video is then treated as
not complete so the stage that wrote it makes it again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import chunk_file, write_sta_stores

from cli import main
from stores import features as fstore
from stores import zarr_io
from stores.chunks import ChunkError
from stores.integrity import verify_store


def features_chunk(ws: Path, video_id: str, array: str, index: int) -> Path:
    return chunk_file(ws / "features.zarr" / "videos" / video_id / array, index)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE = {
    "missing": lambda path: path.unlink(),
    "flipped byte": flip_byte,
    "random bytes": lambda path: path.write_bytes(path.read_bytes()[:10] + np.random.default_rng(0).bytes(64)),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
}
EXPECTED = {"missing": "missing", "flipped byte": "checksum mismatch", "random bytes": "checksum mismatch",
            "truncated": "checksum mismatch"}  # fmt: skip


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_named_by_readers_and_verify_and_the_video_made_again(tmp_path, damage):
    write_sta_stores(tmp_path, n_videos=2, n_frames=20)
    DAMAGE[damage](features_chunk(tmp_path, "vid01", "audio", 1))
    expected = f"{tmp_path / 'features.zarr'}: video vid01, array audio, chunk 1: "
    with pytest.raises(ChunkError) as raised:
        fstore.VideoReader(tmp_path / "features.zarr", "vid01").read("audio", 0, 20)
    assert str(raised.value).startswith(expected) and EXPECTED[damage] in str(raised.value)
    np.testing.assert_array_equal(fstore.VideoReader(tmp_path / "features.zarr", "vid00").read("t", 0, 20),
                                  np.arange(20) / 10.0)  # the other video reads as written  # fmt: skip

    check = verify_store(tmp_path / "features.zarr")
    assert check.videos == 2 and list(check.damaged) == ["vid01"]
    assert check.damaged["vid01"].startswith(expected) and check.chunks > 0 and check.bytes > 0
    root = zarr_io.open_root(tmp_path / "features.zarr")
    video = fstore.SCHEMA.read_video(root, "vid01")
    assert video.status == zarr_io.STATUS_IN_PROGRESS and video.damage == check.damaged["vid01"]
    assert fstore.SCHEMA.complete_videos(root) == ["vid00"]


def test_verify_command_reports_speed_and_exits_1_on_damage(tmp_path):
    write_sta_stores(tmp_path, n_videos=2, n_frames=20)
    clean = CliRunner().invoke(main, ["verify", "-w", str(tmp_path)])
    assert clean.exit_code == 0, clean.output
    assert clean.output.startswith("verify: 2 store(s), 4 videos,") and "GB/s); 0 damaged" in clean.output
    features_chunk(tmp_path, "vid00", "frames", 0).unlink()
    damaged = CliRunner().invoke(main, ["verify", "-w", str(tmp_path), "--no-mark"])
    assert damaged.exit_code == 1
    lines = damaged.output.strip().splitlines()
    assert lines[0].startswith(f"DAMAGED vid00: {tmp_path / 'features.zarr'}: video vid00, array frames, chunk 0: missing")
    assert lines[0].endswith("[left as it is (--no-mark)]") and lines[-1].endswith("; 1 damaged")
    assert fstore.SCHEMA.complete_videos(zarr_io.open_root(tmp_path / "features.zarr")) == ["vid00", "vid01"]
