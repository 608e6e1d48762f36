"""The extract stage end to end on generated media."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from cli import main
from pipeline.common import media
from pipeline.common.flow import FlowConfig
from pipeline.common.scheduling import SchedulerConfig
from pipeline.extract.config import ExtractConfig
from pipeline.extract.run import run_extract, segment_bounds
from stores import features as fstore

LOCAL = SchedulerConfig(workers=1)


def layout(tmp_path: Path, videos: dict[str, list]) -> Path:
    """Move generated videos into <class>/<file> under tmp_path/in."""
    root = tmp_path / "in"
    for label, items in videos.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for item in items:
            shutil.move(str(item.path), root / label / item.path.name)
    return root


def open_video(ws: Path, video_id: str) -> zarr.Group:
    return zarr.open_group(str(ws / "features.zarr"), mode="r", path=f"videos/{video_id}")


def marker_columns(frames: np.ndarray) -> np.ndarray:
    """Column of the white marker in each frame (the brightest column)."""
    return frames.astype(float).mean(axis=(1, 3)).argmax(axis=1)


def test_native_rate_frames_times_and_markers(tmp_path, video_factory):
    video = video_factory("a.mp4", n_frames=12, fps=10, size=(64, 48))
    src = layout(tmp_path, {"cat": [video]})
    summary = run_extract(src, tmp_path / "ws", ExtractConfig(size=64), LOCAL)
    assert (summary.done, summary.skipped, summary.failed) == (1, 0, 0)
    group = open_video(tmp_path / "ws", "a")
    assert group["frames"].shape == (12, 64, 64, 3) and group["frames"].dtype == np.uint8
    assert group["flow"].shape == (12, 2, 16, 16) and group["flow"].dtype == np.float16  # stored at 0.25x
    assert group["audio"].shape == (12, 257, 48) and group["audio"].dtype == np.float16
    np.testing.assert_allclose(group["t"][:], np.arange(12) / 10, atol=1e-6)
    np.testing.assert_array_equal(marker_columns(group["frames"][:]), 2 * np.arange(12))
    attrs = dict(group.attrs)
    assert attrs["status"] == "complete" and attrs["label"] == "cat" and attrs["n_frames"] == 12
    assert attrs["has_audio"] is True and attrs["fps"] == pytest.approx(10)
    root = zarr.open_group(str(tmp_path / "ws" / "features.zarr"), mode="r")
    assert root.attrs["classes"] == ["cat"] and root.attrs["store_kind"] == "features"


@pytest.mark.parametrize("fps,expected_sources", [(5.0, [0, 2, 4, 6, 8, 10]), (20.0, [k // 2 for k in range(24)])])
def test_fps_picks_frames_by_timestamp(tmp_path, video_factory, fps, expected_sources):
    video = video_factory("a.mp4", n_frames=12, fps=10, size=(64, 48))
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "ws", ExtractConfig(size=64, fps=fps, flow=FlowConfig("none")), LOCAL)
    frames = open_video(tmp_path / "ws", "a")["frames"][:]
    assert frames.shape[0] == len(expected_sources)
    np.testing.assert_array_equal(marker_columns(frames), 2 * np.asarray(expected_sources))


def test_variable_frame_rate_keeps_true_timestamps(tmp_path, video_factory):
    video = video_factory("v.mkv", n_frames=10, fps=10, size=(64, 48), vfr=True)
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "ws", ExtractConfig(size=64, flow=FlowConfig("none")), LOCAL)
    group = open_video(tmp_path / "ws", "v")
    np.testing.assert_allclose(group["t"][:], np.asarray(video.frame_times) - video.frame_times[0], atol=1e-3)
    # Resampled to a regular 10 fps grid: each grid time shows the latest frame at or before it.
    run_extract(src, tmp_path / "ws10", ExtractConfig(size=64, fps=10, flow=FlowConfig("none")), LOCAL)
    frames = open_video(tmp_path / "ws10", "v")["frames"][:]
    grid = np.arange(frames.shape[0]) / 10
    expected = np.searchsorted(np.asarray(video.frame_times), grid + 1e-6, side="right") - 1
    np.testing.assert_array_equal(marker_columns(frames), 2 * expected)


def write_vfr_video(path: Path, n_frames: int = 10) -> list[float]:
    """Frames 1/30 s and 1/20 s apart in turn (time base 1/600, exact in MP4); returns their times."""
    import av
    from fractions import Fraction

    tick = Fraction(1, 600)
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=30)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.time_base = video.codec_context.time_base = tick  # the encoder would round pts to 1/30 s
    pts, times = 0, []
    for k in range(n_frames):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * k, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, tick
        times.append(pts / 600)
        pts += 20 if k % 2 == 0 else 30
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    container.close()
    return times


def test_variable_frame_rate_stores_the_frames_mean_rate(tmp_path):
    (tmp_path / "in" / "cat").mkdir(parents=True)
    times = np.asarray(write_vfr_video(tmp_path / "in" / "cat" / "v.mp4"))
    mean_rate = (times.size - 1) / (times[-1] - times[0])  # 9 / (5/30 + 4/20) = 24.55 fps
    run_extract(tmp_path / "in", tmp_path / "ws", ExtractConfig(size=64, flow=FlowConfig("none")), LOCAL)
    group = open_video(tmp_path / "ws", "v")
    assert group.attrs["fps"] == pytest.approx(mean_rate, rel=1e-6)
    assert group.attrs["source_fps"] == pytest.approx(30.0)  # the median gap's rate: what was stored before
    np.testing.assert_allclose(group["t"][:], times - times[0], atol=1e-9)  # the frames' own times
    # At a chosen rate, that rate is stored.
    run_extract(tmp_path / "in", tmp_path / "ws10", ExtractConfig(size=64, fps=10, flow=FlowConfig("none")), LOCAL)
    assert open_video(tmp_path / "ws10", "v").attrs["fps"] == 10


def test_mean_rate_of_a_single_frame_is_the_containers_rate(tmp_path, video_factory):
    found = media.probe(video_factory("one.mp4", n_frames=1, fps=25, with_audio=False).path)
    assert found.n_source_frames == 1
    assert found.mean_fps == found.native_fps == pytest.approx(25.0)


def test_file_names_with_spaces_and_accents_get_a_derived_id_and_keep_their_name(tmp_path, video_factory):
    video = video_factory("my clip ünï — ok.mp4", n_frames=6)
    src = layout(tmp_path, {"cat": [video]})
    summary = run_extract(src, tmp_path / "ws", ExtractConfig(size=32, flow=FlowConfig("none")), LOCAL)
    assert (summary.done, summary.failed) == (1, 0)
    group = open_video(tmp_path / "ws", "my_clip_uni_ok-c7f825fe")
    assert group.attrs["status"] == "complete" and group.attrs["n_frames"] == 6
    assert group.attrs["source_name"] == "my clip ünï — ok.mp4"


def test_folder_entries_that_are_not_videos_are_named_and_counted(tmp_path, video_factory):
    good = video_factory("good.mp4", n_frames=6)
    src = layout(tmp_path, {"cat": [good]})
    _write_audio_only(src / "cat" / "voice.m4a")
    (src / "cat" / "loop.mp4").symlink_to("loop.mp4")
    (src / "cat" / "x.mp4").mkdir()
    (src / "cat" / "notes.txt").write_text("not a video\n")
    (src / "cat" / ".y.mp4.partial").write_bytes(b"half")  # hidden: ignored
    result = CliRunner().invoke(main, ["extract", str(src), "--workspace", str(tmp_path / "ws"), "--size", "32", "--quiet"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    reasons = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1] for line in lines}
    assert reasons == {
        "voice.m4a": "audio-only file (.m4a): no video stream",
        "loop.mp4": "symlink loop",
        "x.mp4": "is a folder, not a video file",
        "notes.txt": "not a video file (extension .txt)",
    }
    assert "extract: 1 done, 0 skipped, 4 failed" in result.output
    root = zarr.open_group(str(tmp_path / "ws" / "features.zarr"), mode="r")
    # A bad file took no id: its failure is recorded under its path.
    failures = {Path(key).name: failure for key, failure in root.attrs["failures"].items()}
    assert failures["loop.mp4"]["reason"] == "symlink loop"
    assert sorted(fstore.SCHEMA.complete_videos(root)) == ["good"]


def test_flow_direction_and_magnitude_on_a_known_translation(tmp_path, video_factory):
    video = video_factory("m.mp4", n_frames=6, fps=10, size=(96, 96), shift_per_frame=(2, 1), marker=False)
    src = layout(tmp_path, {"cat": [video]})
    config = ExtractConfig(size=96, flow=FlowConfig("dis", scale=1.0, preset="medium", stored_scale=1.0))
    run_extract(src, tmp_path / "ws", config, LOCAL)
    flow = open_video(tmp_path / "ws", "m")["flow"][:].astype(np.float32)
    assert np.all(flow[0] == 0)
    inner = flow[1:, :, 16:-16, 16:-16]
    assert np.median(inner[:, 0]) == pytest.approx(2.0, abs=0.3)  # dx: content moves right
    assert np.median(inner[:, 1]) == pytest.approx(1.0, abs=0.3)  # dy: content moves down
    # Computed at half resolution and stored at a quarter (the defaults), the values are still in
    # stored-frame pixels, in steps of 1/32 px.
    run_extract(src, tmp_path / "ws2", ExtractConfig(size=96, flow=FlowConfig("dis", 0.5, "medium")), LOCAL)
    quarter = open_video(tmp_path / "ws2", "m")["flow"][:].astype(np.float32)
    assert quarter.shape[2:] == (24, 24)
    assert np.median(quarter[1:, 0, 4:-4, 4:-4]) == pytest.approx(2.0, abs=0.4)
    assert np.array_equal(quarter * 32, np.round(quarter * 32))


def test_tone_onset_appears_in_its_frames_window(tmp_path, video_factory):
    video = video_factory("t.mp4", n_frames=20, fps=10, audio_rate=44100, tone=(1000.0, 12))
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "ws", ExtractConfig(size=32, flow=FlowConfig("none")), LOCAL)
    audio = open_video(tmp_path / "ws", "t")["audio"][:].astype(np.float32)
    band = audio[:, 32, :].mean(axis=1)  # 1000 Hz bin
    assert band[12] > 1.0
    assert np.all(band[:6] < 0.3)  # windows [k/10, k/10 + 0.5) that end before 1.2 s hear nothing
    assert band[12] > band[6] + 1.0


@pytest.mark.parametrize(
    "name,kwargs,has_audio",
    [
        ("odd.mp4", {"size": (63, 47)}, True),
        ("audiofirst.mkv", {"audio_first": True}, True),
        ("surround.mp4", {"audio_channels": 6, "audio_rate": 48000}, True),
        ("data.ts", {"data_stream": True}, True),
        ("silent.mp4", {"with_audio": False}, False),
        ("hevc.mkv", {"codec": "libx265", "with_audio": False}, False),
        ("mpeg2.mpg", {"codec": "mpeg2video"}, True),
    ],
)
def test_streams_found_in_awkward_files(tmp_path, video_factory, name, kwargs, has_audio):
    video = video_factory(name, n_frames=8, **kwargs)
    src = layout(tmp_path, {"cat": [video]})
    summary = run_extract(src, tmp_path / "ws", ExtractConfig(size=32), LOCAL)
    assert summary.failures == [] and summary.done == 1
    group = open_video(tmp_path / "ws", Path(name).stem)
    assert group["frames"].shape == (8, 32, 32, 3)
    assert group.attrs["has_audio"] is has_audio
    audio = group["audio"][:]
    assert audio.shape == (8, 257, 48)
    if not has_audio:
        assert not np.any(audio)


def test_keep_aspect_makes_the_shorter_side_the_size(tmp_path, video_factory):
    video = video_factory("wide.mp4", n_frames=4, size=(80, 40))
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "ws", ExtractConfig(size=30, keep_aspect=True), LOCAL)
    assert open_video(tmp_path / "ws", "wide")["frames"].shape == (4, 30, 60, 3)


def test_xarray_opens_a_video_with_named_dimensions(tmp_path, video_factory):
    video = video_factory("a.mp4", n_frames=6)
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "ws", ExtractConfig(size=32), LOCAL)
    ds = fstore.SCHEMA.open_dataset(tmp_path / "ws" / "features.zarr", "a")
    assert ds.frames.dims == ("t", "y", "x", "c")
    assert ds.flow.dims == ("t", "flow_component", "flow_y", "flow_x")
    assert ds.audio.dims == ("t", "freq", "time")
    assert float(ds.freq[1]) == pytest.approx(31.25)
    assert ds.frames.sel(t=0.3, method="nearest").shape == (32, 32, 3)
    consolidated = xr.open_zarr(str(tmp_path / "ws" / "features.zarr"), group="videos/a")
    assert consolidated.sizes["t"] == 6


def test_rerun_skips_unchanged_and_redoes_changed_or_incomplete(tmp_path, video_factory):
    a, b, c = (video_factory(f"{n}.mp4", n_frames=6) for n in "abc")
    src = layout(tmp_path, {"cat": [a, b], "dog": [c]})
    ws = tmp_path / "ws"
    config = ExtractConfig(size=32)
    first = run_extract(src, ws, config, LOCAL)
    assert (first.done, first.skipped) == (3, 0)
    again = run_extract(src, ws, config, LOCAL)
    assert (again.done, again.skipped, again.frames_written) == (0, 3, 0)
    # An incomplete video (as after a kill) and a changed source are redone; the rest are skipped.
    root = zarr.open_group(str(ws / "features.zarr"), mode="r+")
    root["videos/a"].attrs.update({"status": "in_progress", "segments_done": []})
    shutil.copy(src / "cat" / "a.mp4", src / "dog" / "c.mp4")  # c's content changes
    third = run_extract(src, ws, config, LOCAL)
    assert (third.done, third.skipped) == (2, 1)
    # Changed settings redo everything.
    fourth = run_extract(src, ws, ExtractConfig(size=24), LOCAL)
    assert (fourth.done, fourth.skipped) == (3, 0)
    assert open_video(ws, "b")["frames"].shape[1:3] == (24, 24)


def test_killed_run_resumes_to_the_same_result(tmp_path, video_factory):
    video = video_factory("long.mp4", n_frames=160, fps=20, size=(64, 48))
    src = layout(tmp_path, {"cat": [video]})
    args = ["--size", "48", "--segment-frames", "16", "--quiet", "--json"]
    clean = tmp_path / "clean"
    assert CliRunner().invoke(main, ["extract", str(src), "--workspace", str(clean), *args]).exit_code == 0

    ws = tmp_path / "ws"
    command = [sys.executable, "-m", "cli", "extract", str(src), "--workspace", str(ws), *args]
    proc = subprocess.Popen(command, cwd=Path(__file__).parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done: list = []
    while time.time() < deadline and proc.poll() is None:
        try:
            group = open_video(ws, "long")
            done = list(group.attrs.get("segments_done", []))
        except Exception:  # noqa: BLE001 - the store may not exist yet
            done = []
        if 1 <= len(done) < 10:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode == 0:
        pytest.fail("the run finished before it could be killed; make the video longer")
    assert open_video(ws, "long").attrs["status"] == "in_progress"

    result = CliRunner().invoke(main, ["extract", str(src), "--workspace", str(ws), *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["done"] == 1 and 0 < summary["frames_written"] < 160  # only the missing segments
    for name in ("frames", "flow", "audio"):
        np.testing.assert_array_equal(open_video(ws, "long")[name][:], open_video(clean, "long")[name][:])


def test_segments_cut_on_the_first_chunk_after_a_keyframe():
    times = np.arange(200) / 25.0
    keyframes = times[::50]  # frames 0, 50, 100, 150
    # plain cuts at 32, 96, 144, 192 move to 112 and 160 (a keyframe lies within a segment's length);
    # 64 = the first chunk boundary past frame 50 + its primer frame; none lies in [32, 64) or [192, 200)
    assert segment_bounds(times, keyframes, 32, chunk=16) == [
        (0, 32), (32, 64), (64, 112), (112, 160), (160, 192), (192, 200)
    ]  # fmt: skip
    assert segment_bounds(times, np.zeros(0), 64, chunk=16) == [(0, 64), (64, 128), (128, 192), (192, 200)]
    # at another output rate, a keyframe maps to the first output frame at or after it
    resampled = np.arange(80) / 10.0  # frames 0, 20, 40, 60 show keyframes at 0, 2, 4, 6 s: cuts 8, 24, 48, 64
    assert segment_bounds(resampled, keyframes, 16, chunk=8) == [(0, 24), (24, 48), (48, 64), (64, 80)]


def test_keyframe_cut_segments_store_what_one_segment_stores(tmp_path, video_factory):
    video = video_factory("gop.mp4", n_frames=120, fps=20, size=(64, 48), gop=40, tone=(800.0, 30))
    found = media.probe(video.path)
    np.testing.assert_allclose(found.keyframe_times, [0.0, 2.0, 4.0])
    bounds = segment_bounds(media.target_times(found, None), found.keyframe_times, 32)
    assert bounds == [(0, 48), (48, 96), (96, 120)]  # 48: first chunk boundary past frame 40 + primer
    src = layout(tmp_path, {"cat": [video]})
    stores = {}
    for name, segment_frames in (("one", 512), ("cut", 32)):
        config = ExtractConfig(size=32, segment_frames=segment_frames)
        summary = run_extract(src, tmp_path / name, config, SchedulerConfig(workers=2))
        assert summary.ok and summary.frames_written == 120
        stores[name] = open_video(tmp_path / name, "gop")
    assert [list(p) for p in stores["cut"].attrs["segments_done"]] == [list(b) for b in bounds]
    for array in ("frames", "flow", "audio"):
        np.testing.assert_array_equal(stores["cut"][array][:], stores["one"][array][:])


def test_dask_distributed_cluster_gives_the_same_store(tmp_path, video_factory):
    from distributed import LocalCluster

    videos = [video_factory(f"{n}.mp4", n_frames=40, fps=20) for n in "ab"]
    src = layout(tmp_path, {"cat": videos})
    config = ExtractConfig(size=32, segment_frames=16)
    run_extract(src, tmp_path / "local", config, LOCAL)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        summary = run_extract(src, tmp_path / "cluster", config, SchedulerConfig(address=cluster.scheduler_address))
    assert summary.done == 2 and summary.failed == 0
    for vid in "ab":
        for name in ("frames", "flow", "audio"):
            np.testing.assert_array_equal(open_video(tmp_path / "cluster", vid)[name][:], open_video(tmp_path / "local", vid)[name][:])


def test_bad_inputs_each_get_one_line_and_the_others_finish(tmp_path, video_factory):
    good = video_factory("good.mp4", n_frames=6)
    two = video_factory("two.mp4", n_frames=2)
    audio_only = tmp_path / "media" / "voice.mka"
    whole = video_factory("whole.mp4", n_frames=30)
    src = layout(tmp_path, {"cat": [good, two, whole]})
    _write_audio_only(audio_only)
    shutil.move(str(audio_only), src / "cat" / "voice.mka")
    (src / "cat" / "empty.mp4").write_bytes(b"")
    (src / "cat" / "text.mp4").write_text("this is not a video\n" * 50)
    data = (src / "cat" / "whole.mp4").read_bytes()
    (src / "cat" / "cut.mp4").write_bytes(data[: len(data) // 2])
    (src / "dog").mkdir()
    manifest = tmp_path / "list.csv"
    rows = [f"in/cat/{p.name},{'cat'}" for p in sorted((src / "cat").iterdir())]
    rows += ["in/cat/missing.mp4,cat", "in/cat/good.mp4,dog", "in/cat/good.mp4,cat,../escape"]
    manifest.write_text("path,label,id\n" + "\n".join(r if r.count(",") == 2 else r + "," for r in rows) + "\n")

    result = CliRunner().invoke(main, ["extract", str(manifest), "--workspace", str(tmp_path / "ws"), "--size", "32", "--quiet"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    reasons = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1] for line in lines}
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert reasons["text.mp4"].startswith("not a media file PyAV can read")
    assert reasons["cut.mp4"].startswith("not a media file PyAV can read")  # moov atom lost
    assert reasons["voice.mka"] == "audio-only file (.mka): no video stream"  # named from the listing now
    assert reasons["two.mp4"] == "only 2 frame(s) at the chosen rate (need at least 3)"
    assert reasons["missing.mp4"] == "no such file"
    assert "would escape the store" in reasons["good.mp4"] or "duplicate video id" in reasons["good.mp4"]
    assert len(lines) == 8  # the 6 files above + a duplicate id + an escaping id
    assert "extract: 2 done, 0 skipped, 8 failed" in result.output
    root = zarr.open_group(str(tmp_path / "ws" / "features.zarr"), mode="r")
    failures = {Path(key).name: failure for key, failure in root.attrs["failures"].items()}
    assert failures["empty.mp4"]["reason"] == "empty file (0 bytes)"
    assert sorted(fstore.SCHEMA.complete_videos(root)) == ["good", "whole"]


def test_manifest_with_unknown_label_column_stops_with_one_line(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,category\na.mp4,cat\n")
    result = CliRunner().invoke(main, ["extract", str(manifest), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert "list.csv: no 'label' column (columns: path, category" in result.output


def test_json_summary_and_truncated_tail_still_usable(tmp_path, video_factory):
    video = video_factory("a.ts", n_frames=30, data_stream=True)
    src = layout(tmp_path, {"cat": [video]})
    path = src / "cat" / "a.ts"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])  # MPEG-TS cut mid-stream: the head still decodes
    result = CliRunner().invoke(main, ["extract", str(src), "--workspace", str(tmp_path / "ws"), "--size", "32", "--json", "-q"])
    summary = json.loads(result.output)
    assert summary["done"] == 1 and summary["ok"] is True
    n = open_video(tmp_path / "ws", "a")["frames"].shape[0]
    assert 3 <= n < 30


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        signal_ = np.zeros((1, 16000), dtype=np.float32)
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal_[:, start : start + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_frames_are_jpeg_by_default_and_lossless_on_request(tmp_path, video_factory):
    from pipeline.extract.config import FrameStorageConfig
    from stores.codecs import JpegFramesCodec

    video = video_factory("j.mp4", n_frames=20, fps=10, size=(96, 64))
    src = layout(tmp_path, {"cat": [video]})
    run_extract(src, tmp_path / "jpeg", ExtractConfig(size=64), LOCAL)
    lossless = ExtractConfig(size=64, frames=FrameStorageConfig(codec="lossless"))
    run_extract(src, tmp_path / "lossless", lossless, LOCAL)
    jpeg_frames, exact = open_video(tmp_path / "jpeg", "j")["frames"], open_video(tmp_path / "lossless", "j")["frames"]
    assert isinstance(jpeg_frames.metadata.codecs[0], JpegFramesCodec)
    assert not any(isinstance(codec, JpegFramesCodec) for codec in exact.metadata.codecs)
    a, b = jpeg_frames[:].astype(np.float64), exact[:].astype(np.float64)
    assert a.shape == b.shape and 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 35
    # The frames settings enter the fingerprint: switching the codec makes the video again.
    again = run_extract(src, tmp_path / "jpeg", lossless, LOCAL)
    assert (again.done, again.skipped) == (1, 0)
    np.testing.assert_array_equal(open_video(tmp_path / "jpeg", "j")["frames"][:], exact[:])
    with pytest.raises(ValueError, match="frames codec must be one of jpeg, lossless, got 'png'"):
        ExtractConfig(frames=FrameStorageConfig(codec="png"))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("plain.mp4", {}),
        ("vfr.mkv", {"vfr": True}),
        ("audiofirst.mkv", {"audio_first": True}),
        ("surround.mp4", {"audio_channels": 6, "audio_rate": 48000}),
        ("data.ts", {"data_stream": True}),
        ("silent.mp4", {"with_audio": False}),
        ("mpeg2.mpg", {"codec": "mpeg2video"}),
        ("odd.mp4", {"size": (63, 47)}),
        ("one.mp4", {"n_frames": 1}),
    ],
)
def test_quick_opens_find_what_full_opens_find(monkeypatch, video_factory, name, kwargs):
    """The probe and the audio decoder open files without decoding video frames (media._open_for_probe,
    media._open_for_audio); they must find the same streams, times and samples as the usual open."""
    video = video_factory(name, **{"n_frames": 12, **kwargs})
    quick = media.probe(video.path)
    quick_audio = media.decode_audio_mono(quick, 0.0, 5.0) if quick.has_audio else None
    monkeypatch.setattr(media, "_open_for_probe", media.open_container)
    monkeypatch.setattr(media, "_open_for_audio", lambda probe_: media.open_container(probe_.path))
    full = media.probe(video.path)
    for field in quick.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(quick, field), getattr(full, field), err_msg=field)
    if quick_audio is not None:
        full_audio = media.decode_audio_mono(full, 0.0, 5.0)
        np.testing.assert_array_equal(quick_audio[0], full_audio[0])
        assert quick_audio[1:] == full_audio[1:]


def test_the_summary_counts_the_seconds_its_workers_spent_in_segments(tmp_path, video_factory):
    src = layout(tmp_path, {"cat": [video_factory("a.mp4", n_frames=40, fps=10, size=(32, 32)),
                                    video_factory("b.mp4", n_frames=20, fps=10, size=(32, 32))]})  # fmt: skip
    config = ExtractConfig(size=32, segment_frames=16)  # 3 + 2 segments
    first = run_extract(src, tmp_path / "ws", config, LOCAL)
    assert first.ok and first.frames_written == 60
    # One worker: its segments ran one after another inside the stage's own wall time.
    assert 0 < first.segment_seconds < first.seconds
    assert first.to_dict()["segment_seconds"] == first.segment_seconds  # in `--json` output too
    again = run_extract(src, tmp_path / "ws", config, LOCAL)
    assert (again.skipped, again.frames_written, again.segment_seconds) == (2, 0, 0.0)


def test_worker_processes_store_what_threads_store_and_their_server_preloads_the_tasks(tmp_path, video_factory,
                                                                                    worker_server_requests):  # fmt: skip
    import importlib

    started = worker_server_requests
    videos = [video_factory(f"{n}.mp4", n_frames=40, fps=20) for n in "ab"]
    src = layout(tmp_path, {"cat": videos})
    for kind in ("threads", "processes"):
        result = CliRunner().invoke(main, ["extract", str(src), "--workspace", str(tmp_path / kind), "--size", "32",
                                           "--segment-frames", "16", "-j", "2", f"--{kind}", "--quiet"])  # fmt: skip
        assert result.exit_code == 0, result.output
    # Started by the stage before it imports extract's tasks (so both imports overlap), and again, a no-op,
    # by the cluster; the module it preloads is the one the workers' tasks come from.
    assert started == [("pipeline.extract.run",)] * 2
    assert callable(importlib.import_module(started[0][0]).segment_task)
    for vid in "ab":
        for name in ("frames", "flow", "audio"):
            np.testing.assert_array_equal(open_video(tmp_path / "processes", vid)[name][:],
                                          open_video(tmp_path / "threads", vid)[name][:])  # fmt: skip


def test_a_video_that_crashes_its_worker_process_fails_alone_and_a_rerun_extracts_it(tmp_path, video_factory,
                                                                                    crashing_workers):  # fmt: skip
    from pipeline.common.scheduling import WORKER_DIED

    videos = [video_factory(f"{n}.mp4", n_frames=40, fps=20) for n in "abc"]
    src = layout(tmp_path, {"cat": videos})
    config = ExtractConfig(size=32, segment_frames=64)
    reference = run_extract(src, tmp_path / "reference", config, LOCAL)
    assert reference.done == 3
    with crashing_workers("pipeline.extract.run", "_extract_segment", lambda store, video_id, *rest: video_id,
                          "b") as scheduler:  # fmt: skip
        summary = run_extract(src, tmp_path / "ws", config, scheduler)
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.failures == [{"video_id": "b", "path": str(src / "cat" / "b.mp4"), "reason": WORKER_DIED}]
    assert fstore.SCHEMA.read_store(zarr.open_group(str(tmp_path / "ws" / "features.zarr"), mode="r")).failures["b"][
        "reason"] == WORKER_DIED  # fmt: skip
    again = run_extract(src, tmp_path / "ws", config, LOCAL)  # nothing crashes here: b is extracted, a and c kept
    assert (again.done, again.skipped, again.failed) == (1, 2, 0)
    for vid in "abc":
        for name in ("frames", "flow", "audio"):
            np.testing.assert_array_equal(open_video(tmp_path / "ws", vid)[name][:],
                                          open_video(tmp_path / "reference", vid)[name][:])  # fmt: skip
