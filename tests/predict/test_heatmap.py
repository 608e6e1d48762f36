"""The overlay's heat map (lookup tables + cv2 blend) against the straightforward per-pixel rendering: the
matplotlib colormap evaluated at s/255 and the blend frame · (1 − w) + colour · w, w = alpha · s/255, in
float64. Tolerance: equal, but for near-ties, which may round either way; pixels of saliency 0 exactly unchanged;
and the rendered MP4, decoded, against that reference within the codec's loss."""

from __future__ import annotations

import av
import numpy as np
import pytest
from conftest import write_video
from matplotlib import colormaps

from pipeline.common import media
from pipeline.predict.heatmap import Heatmap, blend, colormap_lut
from pipeline.predict.overlay import write_overlay


def unrounded(frames: np.ndarray, saliency: np.ndarray, colormap: str, alpha: float) -> np.ndarray:
    """Per pixel, in float64, straight from the colormap (no lookup table, no cv2); not yet rounded."""
    level = saliency.astype(np.float64) / 255.0
    colour = np.floor(colormaps[colormap](level)[..., :3] * 255.0 + 0.5)
    weight = alpha * level[..., None]
    return frames * (1.0 - weight) + colour * weight


def reference(frames: np.ndarray, saliency: np.ndarray, colormap: str, alpha: float) -> np.ndarray:
    return np.floor(unrounded(frames, saliency, colormap, alpha) + 0.5)


@pytest.mark.parametrize("colormap, alpha", [("jet", 0.5), ("inferno", 0.8), ("viridis", 1.0), ("jet", 0.0)])
def test_blend_matches_the_per_pixel_rendering(colormap, alpha):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 37, 53, 3), dtype=np.uint8)  # odd sizes: no row alignment to lean on
    saliency = rng.integers(0, 256, (3, 37, 53), dtype=np.uint8)
    saliency[:, :5] = 0
    saliency[:, -5:] = 255
    out = blend(frames, saliency, colormap_lut(colormap), alpha)
    exact = unrounded(frames, saliency, colormap, alpha)
    expected = np.floor(exact + 0.5)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    # Equal, except where the exact value is within 1/200 of a level of a tie (x.5): cv2 blends in float32,
    # so there it may round to either neighbour.
    tie = np.abs(exact - np.floor(exact) - 0.5) < 0.005
    assert np.all((out == expected) | (tie & (np.abs(out - exact) < 0.505)))
    assert np.array_equal(out[:, :5], frames[:, :5])  # nothing salient: the frame as it was


def test_blend_keeps_rgb_order_and_takes_views():
    frame = np.zeros((4, 6, 3), dtype=np.uint8)
    saliency = np.full((8, 6), 255, dtype=np.uint8)[::2]  # a strided view, as a slice of a stored block is
    out = Heatmap.of(colormap_lut("jet"), 1.0).blend_frame(frame[:, :], saliency)
    assert out[0, 0].tolist() == [128, 0, 0]  # jet's top is dark red: red first, as in the frames


def test_the_overlay_video_shows_the_reference_rendering(tmp_path):
    video = write_video(tmp_path / "clip.mp4", n_frames=8, size=(96, 64), tone=(440.0, 0))
    ys, xs = np.mgrid[0:64, 0:96]
    maps = np.stack([(255 * np.exp(-(((xs - 20 - 8 * k) / 25.0) ** 2 + ((ys - 32) / 20.0) ** 2))).astype(np.uint8)
                     for k in range(8)])  # fmt: skip
    probe = media.probe(video.path)
    source = np.stack(list(media.decode_frames(probe, media.target_times(probe, None), (96, 64))))

    def error(alpha: float) -> np.ndarray:
        out = tmp_path / f"overlay-{alpha}.mp4"
        write_overlay(video.path, out, None, 8, lambda start, stop: maps[start:stop], alpha=alpha, colormap="jet")
        with av.open(str(out)) as container:
            assert len(container.streams.audio) == 1
            got = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        assert got.shape == source.shape
        return got.astype(np.float64) - reference(source, maps, "jet", alpha)

    # alpha 0 re-encodes the frames unchanged: what H.264 loses on this textured clip (about 4 grey levels).
    codec_loss = np.abs(error(0.0)).mean()
    heat = error(0.7)
    # The saturated heat colours lose more to 4:2:0 chroma, but no more than a few levels beyond that ...
    assert np.abs(heat).mean() < codec_loss + 3.0, (np.abs(heat).mean(), codec_loss)
    # ... and without a colour cast where the heat is strongest (a wrong YUV matrix shifts these by 5-10).
    assert np.abs(heat[maps > 200].mean(axis=0)).max() < 3.0, heat[maps > 200].mean(axis=0)
