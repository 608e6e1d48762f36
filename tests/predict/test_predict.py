"""The predict stage: new videos (no tags) → predictions.zarr at the source size, overlays with audio,
clear errors; and the untagged inputs it accepts."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from conftest import textured_image, write_sta_stores, write_video

from cli import main
from pipeline.common import media
from pipeline.common.files import partial_path
from pipeline.common.inputs import InputError, discover
from pipeline.predict.config import PredictConfig
from pipeline.predict.overlay import AAC_FRAME, write_overlay
from pipeline.predict.run import PredictError, run_predict
from pipeline.train.run import run_train
from pipeline.workspace.presets import preset_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workspace whose tiny STA network has learned to find a bright square (frames stored at 64 px)."""
    ws = tmp_path_factory.mktemp("trained")
    write_sta_stores(ws, n_videos=6, n_frames=24, val_videos=1)
    torch.set_num_threads(1)
    summary = run_train(ws, replace(preset_config("cpu", "train"), epochs=5, batch_size=8, num_workers=0))
    assert summary.val["cc"] > 0.5, summary.line()  # it did learn the task
    return ws


def workspace_with(trained: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(trained / "checkpoints", ws / "checkpoints")
    return ws


def write_square_video(path: Path, n_frames: int, size: tuple[int, int], start: tuple[int, int],
                       step: tuple[int, int], fps: int = 10) -> list[tuple[int, int]]:  # fmt: skip
    """A bright 12x12 square moving over a darkened texture; returns its centre (y, x) per frame."""
    width, height = size
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    background = textured_image(width, height, seed=9) // 2
    centres = []
    for k in range(n_frames):
        cy, cx = start[0] + step[0] * k, start[1] + step[1] * k
        image = background.copy()
        image[cy - 6 : cy + 6, cx - 6 : cx + 6] = 255
        centres.append((cy, cx))
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    return centres


def test_maps_at_the_source_size_for_every_frame_and_bad_inputs_named(trained, tmp_path):
    ws = workspace_with(trained, tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    odd = write_video(clips / "odd.mp4", n_frames=12, size=(65, 47))
    two = write_video(clips / "two.mkv", n_frames=2, size=(64, 48))
    silent = write_video(clips / "silent.mp4", n_frames=9, size=(80, 60), with_audio=False)
    one = write_video(clips / "one.mp4", n_frames=1, size=(32, 32))
    (clips / "broken.mp4").write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(main, ["predict", str(clips), "--workspace", str(ws), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "predict: 4 done, 0 skipped, 1 failed" in result.output
    assert "shorter than 3 frames, predicted with t-1/t+1 clamped: one (1 frame), two (2 frames)" in result.output
    assert "FAILED" in result.output and "broken.mp4" in result.output
    root = zarr.open_group(str(ws / "predictions.zarr"), mode="r")
    for video in (odd, two, silent, one):
        group = root[f"videos/{video.path.stem}"]
        assert group.attrs["status"] == "complete"
        assert group["saliency"].shape == (video.n_frames, video.height, video.width)
        assert group["saliency"].dtype == np.uint8 and group["has_saliency"][:].all()
        np.testing.assert_allclose(group["t"][:], np.asarray(video.frame_times) - video.frame_times[0], atol=1e-3)
        maps = group["saliency"][:]
        assert (maps.reshape(video.n_frames, -1).max(axis=1) >= 200).all()  # max-normalised, never empty
    assert root.attrs["failures"]["broken"]["reason"]
    again = run_predict(clips, ws, PredictConfig())
    assert (again.done, again.skipped, again.failed) == (0, 4, 1)


def test_the_map_peaks_on_the_object_in_a_new_video(trained, tmp_path):
    ws = workspace_with(trained, tmp_path)
    path = tmp_path / "square.mp4"
    centres = write_square_video(path, n_frames=8, size=(96, 80), start=(30, 24), step=(2, 5))
    summary = run_predict(path, ws, PredictConfig())  # a single file, no tag
    assert summary.done == 1 and summary.ok
    maps = zarr.open_group(str(ws / "predictions.zarr"), mode="r", path="videos/square")["saliency"][:]
    assert maps.shape == (8, 80, 96)
    for saliency, (cy, cx) in zip(maps, centres):
        peak = np.unravel_index(np.argmax(saliency), saliency.shape)
        assert abs(peak[0] - cy) <= 12 and abs(peak[1] - cx) <= 12, (peak, (cy, cx))


def test_overlay_mp4_decodes_at_the_source_size_with_the_audio_aligned(trained, tmp_path):
    ws = workspace_with(trained, tmp_path)
    video = write_video(tmp_path / "tone.mp4", n_frames=16, fps=10, size=(66, 50), tone=(440.0, 8), audio_channels=2)
    summary = run_predict(video.path, ws, PredictConfig(overlay=True, overlay_alpha=0.8))
    assert summary.overlays == 1
    overlay = ws / "overlays" / "tone.mp4"
    with av.open(str(overlay)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].codec_context.channels == 2
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(overlay)) as container:
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].codec_context.sample_rate
    assert len(frames) == 16 and frames[0].shape == (50, 66, 3)
    assert abs(audio.size / rate - 1.6) < 0.1
    # The tone starts at frame 8 (0.8 s): silence before, sound after, in the overlay's own timeline.
    rms = lambda a, b: float(np.sqrt(np.mean(audio[int(a * rate) : int(b * rate)] ** 2)))  # noqa: E731
    assert rms(0.1, 0.7) < 0.01 and rms(0.9, 1.5) > 0.2
    # The heat map changes the picture where the map is salient, and leaves it where it is not.
    with av.open(str(video.path)) as container:
        source = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    saliency = zarr.open_group(str(ws / "predictions.zarr"), mode="r", path="videos/tone")["saliency"][:]
    change = np.abs(np.stack(frames).astype(float) - np.stack(source)).mean(axis=-1)
    assert change[saliency > 200].mean() > 40 > 6 > change[saliency < 20].mean()


def write_tone_clip(path: Path, video_codec: str, audio_codec: str, rate: int, layout: str, hz: float,
                    n_frames: int = 12, fps: int = 10, size: tuple[int, int] = (64, 48)) -> None:  # fmt: skip
    """A textured clip whose audio is a sine of `hz` over its whole length, in the given codecs."""
    width, height = size
    container = av.open(str(path), "w")
    video = container.add_stream(video_codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    # FFmpeg's own Vorbis encoder is the only one in this build (no libvorbis) and is flagged experimental.
    options = {"strict": "experimental"} if audio_codec == "vorbis" else None
    audio = container.add_stream(audio_codec, rate=rate, layout=layout, options=options)
    image = textured_image(width, height, seed=3)
    for _ in range(n_frames):
        container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(video.encode())
    n = int(n_frames / fps * rate)
    tone = (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)
    planes = np.repeat(tone[None], av.AudioLayout(layout).nb_channels, axis=0)
    for start in range(0, n, 1000):  # PyAV converts to the encoder's sample format and frame size
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start : start + 1000]), format="fltp",
                                           layout=layout)  # fmt: skip
        frame.sample_rate, frame.pts = rate, start
        container.mux(audio.encode(frame))
    container.mux(audio.encode())
    container.close()


def mono(frame: av.AudioFrame) -> np.ndarray:
    samples = frame.to_ndarray().astype(np.float64)
    if not frame.format.is_planar:  # packed (PCM): one row of interleaved channels
        samples = samples.reshape(-1, frame.layout.nb_channels).T
    return samples.mean(axis=0)


def decoded_audio(path: Path) -> tuple[np.ndarray, int, str]:
    """The first audio stream's decoded signal, mixed to mono, its sample rate and codec name."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        signal = np.concatenate([mono(frame) for frame in container.decode(stream)])
        return signal, stream.codec_context.sample_rate, stream.codec_context.name


def peak_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.argmax(spectrum) * rate / signal.size)


@pytest.mark.parametrize(
    "name, video_codec, audio_codec, rate, layout, aac_rate",
    [
        ("vp8_vorbis.webm", "libvpx", "vorbis", 44100, "stereo", 44100),  # the reported file: MP4 cannot hold Vorbis
        ("mpeg4_pcm.avi", "mpeg4", "pcm_s16le", 22050, "mono", 22050),  # PCM decodes with no channel positions
        ("h264_pcm.mkv", "libx264", "pcm_s16le", 37800, "stereo", 44100),  # a rate AAC does not take
        ("h264_aac.mp4", "libx264", "aac", 16000, "stereo", 16000),  # what MP4 holds: still works
    ],
)
def test_overlay_carries_any_source_audio_as_aac(tmp_path, name, video_codec, audio_codec, rate, layout, aac_rate):
    source = tmp_path / name
    write_tone_clip(source, video_codec, audio_codec, rate, layout, hz=1000.0)
    n_frames = media.target_times(media.probe(source), None).size
    assert n_frames == 12
    out = tmp_path / "overlays" / "clip.mp4"
    write_overlay(source, out, None, n_frames, lambda start, stop: np.full((stop - start, 48, 64), 128, np.uint8))
    assert out.exists() and not partial_path(out).exists()
    with av.open(str(out)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (48, 64, 3)
    signal, out_rate, codec = decoded_audio(out)
    source_signal, source_rate, source_codec = decoded_audio(source)
    assert source_codec == audio_codec
    assert codec == "aac" and out_rate == aac_rate
    assert abs(signal.size / out_rate - source_signal.size / source_rate) <= AAC_FRAME / out_rate
    assert abs(peak_frequency(signal, out_rate) - 1000.0) < 3.0


def test_a_failed_overlay_leaves_no_partial_and_keeps_the_previous_file(tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", n_frames=12, tone=(440.0, 0))
    out = tmp_path / "overlays" / "clip.mp4"
    out.parent.mkdir()
    out.write_bytes(b"previous overlay")
    partial_seen: list[bool] = []
    decode_tolerant = media.decode_tolerant

    class AudioBroke(Exception):
        pass

    def audio_breaks_after_one_frame(container, stream):
        # Audio is written after all the video, so the partial file holds a header and video packets by now.
        for count, frame in enumerate(decode_tolerant(container, stream)):
            if stream.type == "audio" and count:
                partial_seen.append(partial_path(out).stat().st_size > 0)
                raise AudioBroke
            yield frame

    monkeypatch.setattr(media, "decode_tolerant", audio_breaks_after_one_frame)
    with pytest.raises(AudioBroke):
        write_overlay(video.path, out, None, video.n_frames, lambda a, b: np.full((b - a, 48, 64), 200, np.uint8))
    assert partial_seen == [True]
    assert out.read_bytes() == b"previous overlay" and sorted(out.parent.iterdir()) == [out]


def test_missing_or_foreign_checkpoints_are_clear_errors(tmp_path):
    video = write_video(tmp_path / "a.mp4", n_frames=4)
    with pytest.raises(PredictError, match="no STA checkpoint in .*checkpoints/sta .*run `avfix train` first"):
        run_predict(video.path, tmp_path / "ws", PredictConfig())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PredictError, match="garbage.pt: not a readable PyTorch checkpoint"):
        run_predict(video.path, tmp_path / "ws", PredictConfig(checkpoint=str(garbage)))
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    arguments = ["predict", str(video.path), "-w", str(tmp_path / "ws"), "--checkpoint", str(other)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1 and "other.pt: not an avfix STA checkpoint" in result.output


def test_untagged_inputs_single_file_flat_folder_manifest_without_label(tmp_path):
    for name in ("a.mp4", "b.mkv", "sub/c.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    single = discover(tmp_path / "a.mp4", require_labels=False)
    assert [(r.video_id, r.label) for r in single.records] == [("a", "")]
    folder = discover(tmp_path, require_labels=False)
    assert [(r.video_id, r.label) for r in folder.records] == [("a", ""), ("b", ""), ("c", "sub")]
    assert folder.classes == ["sub"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\na.mp4\nsub/c.mp4\n")
    assert [r.video_id for r in discover(manifest, require_labels=False).records] == ["a", "c"]
    with pytest.raises(InputError, match="no 'label' column"):
        discover(manifest)  # training inputs still need their tags
    with pytest.raises(InputError, match="expected a folder of <class>/<video> or a CSV manifest"):
        discover(tmp_path / "a.mp4")
