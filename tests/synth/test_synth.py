"""avfix synth: layout, truth against the decoded pictures and sound, determinism, resume, bad options."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cli import main
from pipeline.common import media
from pipeline.common.flow import FlowConfig
from pipeline.common.inputs import discover
from pipeline.common.progress import Progress
from pipeline.common.scheduling import SchedulerConfig
from pipeline.extract.config import ExtractConfig
from pipeline.extract.run import run_extract
from pipeline.synth.classes import CLASS_SPECS, class_by_name
from pipeline.synth.generate import SynthConfig, SynthError, generate, plan_set
from pipeline.synth.render import SHAPES, bounce, object_coverage
from pipeline.synth.sound import audible_envelope, class_sound
from pipeline.synth.truth import read_distractors, read_truth
from stores import features as fstore

# Not square, so a swapped x/y shows; 3 classes so both distractors of a video differ in colour.
CONFIG = SynthConfig(classes=3, videos_per_class=2, seconds=3.0, fps=10, width=96, height=80,
                     distractors=2, silent_fraction=0.3, seed=7)  # fmt: skip
COLOUR_DISTANCE = 40  # RGB distance, after H.264 at crf 18


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    summary = generate(out, CONFIG)
    assert summary.ok and summary.written == 6 and summary.skipped == 0
    return out


def decoded_frames(path: Path) -> np.ndarray:
    probe = media.probe(path)
    return np.stack(list(media.decode_frames(probe, probe.frame_times, (probe.width, probe.height))))


def colour_centroid(frame: np.ndarray, colour: tuple[int, int, int], near: tuple[float, float, float] | None = None):
    """(x, y, pixel count) of the pixels that look like `colour` or its pattern's darker shade (within
    COLOUR_DISTANCE of the segment from 0.5 to 1.05 times the colour), optionally only within the circle
    `near` = (x, y, r): the plain definition, without any of the generator's code."""
    pixels = frame.astype(np.float64)
    target = np.asarray(colour, dtype=np.float64)
    shade = np.clip(pixels @ target / (target @ target), 0.5, 1.05)
    mask = np.linalg.norm(pixels - shade[..., None] * target, axis=-1) < COLOUR_DISTANCE
    rows, cols = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    if near is not None:
        mask &= np.hypot(cols - near[0], rows - near[1]) <= near[2]
    count = int(mask.sum())
    return (cols * mask).sum() / max(count, 1), (rows * mask).sum() / max(count, 1), count


def band_energy(samples: np.ndarray, rate: int, band: tuple[float, float]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    return float(spectrum[(freqs >= band[0]) & (freqs <= band[1])].sum())


def video_path(out: Path, video_id: str, label: str) -> Path:
    return out / label / f"{video_id}.mp4"


# --- the set as written ------------------------------------------------------------------------


def test_layout_class_folders_and_manifest(generated):
    names = [spec.name for spec in CLASS_SPECS[:3]]
    assert names == ["c0_disc_tone", "c1_square_noise", "c2_triangle_pulses"]
    assert sorted(p.name for p in generated.iterdir() if p.is_dir()) == names
    for name in names:
        assert sorted(p.name for p in (generated / name).iterdir()) == [f"{name}_000.mp4", f"{name}_001.mp4"]
    found = discover(generated)  # what `avfix extract` sees
    assert found.classes == names and len(found.records) == 6 and not found.problems
    manifest = json.loads((generated / "synth.json").read_text())
    assert manifest["status"] == "complete" and manifest["classes"] == names
    assert manifest["settings"]["seed"] == 7 and len(manifest["videos"]) == 6


def test_truth_csv_columns_rows_and_silent_stretch(generated):
    with (generated / "truth.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["video", "frame", "x", "y", "label", "audible", "radius"]
    assert len(rows) - 1 == 6 * 30
    truth = read_truth(generated)
    assert len(truth) == 6
    n_silent = round(0.3 * 30)
    for video_id, track in truth.items():
        assert video_id.startswith(track.label + "_")
        np.testing.assert_array_equal(track.frame, np.arange(30))
        assert np.all(track.radius == track.radius[0]) and 0.10 * 80 <= track.radius[0] <= 0.15 * 80
        # The whole object stays inside the frame.
        assert np.all(track.x >= track.radius - 1e-3) and np.all(track.x <= 95 - track.radius + 1e-3)
        assert np.all(track.y >= track.radius - 1e-3) and np.all(track.y <= 79 - track.radius + 1e-3)
        silent = np.flatnonzero(~track.audible)
        assert silent.size == n_silent and np.all(np.diff(silent) == 1)  # one stretch
        # It moves (flow must see something) but smoothly: a few pixels per frame at most.
        step = np.hypot(np.diff(track.x), np.diff(track.y))
        assert step.mean() > 0.5 and step.max() < 0.35 * 80 / 10 + 0.01


def test_decoded_videos_have_frame_count_size_rate_and_audio(generated):
    for path in sorted(generated.glob("*/*.mp4")):
        probe = media.probe(path)
        assert probe.n_source_frames == 30 and (probe.width, probe.height) == (96, 80)
        assert probe.native_fps == pytest.approx(10.0)
        np.testing.assert_allclose(probe.frame_times, np.arange(30) / 10, atol=1e-6)
        assert probe.has_audio and probe.audio_rate == 16000 and probe.audio_channels == 1
        assert probe.codec == "h264"


def test_truth_centre_is_where_the_objects_colour_is(generated):
    errors = []
    for video_id, track in read_truth(generated).items():
        frames = decoded_frames(video_path(generated, video_id, track.label))
        assert frames.shape == (30, 80, 96, 3) and frames.dtype == np.uint8
        colour = class_by_name(track.label).colour
        for k, frame in enumerate(frames):
            x, y, count = colour_centroid(frame, colour)
            assert count > 0.3 * np.pi * track.radius[k] ** 2, (video_id, k)
            errors.append(np.hypot(x - track.x[k], y - track.y[k]))
    assert np.median(errors) < 0.4 and max(errors) < 1.0


def test_distractors_are_smaller_silent_objects_of_other_classes_where_written(generated):
    truth = read_truth(generated)
    distractors = read_distractors(generated)
    checked = 0
    for video_id, track in truth.items():
        others = distractors[video_id]
        assert len(others) == 2 and len({d.label for d in others}) == 2
        assert all(d.label != track.label and d.radius[0] < track.radius[0] for d in others)
        np.testing.assert_array_equal(others[0].frame, np.arange(30))
        frames = decoded_frames(video_path(generated, video_id, track.label))
        objects = [track, *others]
        for k, frame in enumerate(frames):
            for d in others:
                # Only where no other object overlaps this one, so the colour is all its own.
                clear = all(
                    np.hypot(o.x[k] - d.x[k], o.y[k] - d.y[k]) > 1.15 * (o.radius[k] + d.radius[k]) + 2
                    for o in objects if o is not d
                )  # fmt: skip
                if clear:
                    x, y, count = colour_centroid(frame, class_by_name(d.label).colour, (d.x[k], d.y[k], 1.2 * d.radius[k] + 2))
                    assert count > 0.2 * np.pi * d.radius[k] ** 2, (video_id, k)
                    assert np.hypot(x - d.x[k], y - d.y[k]) < 1.0, (video_id, k)
                    checked += 1
    assert checked > 100


def test_audio_sounds_in_its_class_band_while_audible_and_not_otherwise(generated):
    truth, distractors = read_truth(generated), read_distractors(generated)
    for video_id, track in truth.items():
        probe = media.probe(video_path(generated, video_id, track.label))
        samples, start, rate = media.decode_audio_mono(probe, 0.0, 3.0)
        assert start == pytest.approx(0.0, abs=1e-3) and samples.size >= 3 * rate
        per_frame = rate // 10
        band = class_by_name(track.label).band_hz
        edge = int(0.02 * rate)  # fades and AAC's smearing stay within this of a stretch's edges
        audible = [band_energy(samples[k * per_frame : (k + 1) * per_frame], rate, band)
                   for k in np.flatnonzero(track.audible)]  # fmt: skip
        silent = [band_energy(samples[k * per_frame + edge : (k + 1) * per_frame - edge], rate, band)
                  for k in np.flatnonzero(~track.audible)]  # fmt: skip
        assert min(audible) > 1000 * max(silent), video_id
        # The distractors' classes are silent: their bands hold ~nothing while the object sounds.
        whole = samples[: 3 * rate][np.repeat(track.audible, per_frame)]
        own = band_energy(whole, rate, band)
        for d in distractors[video_id]:
            assert band_energy(whole, rate, class_by_name(d.label).band_hz) < 1e-3 * own, (video_id, d.label)


# --- pieces checked against plain restatements -------------------------------------------------


def test_bounce_matches_a_stepwise_simulation():
    low, high, velocity, dt = 3.0, 17.0, 2.7, 0.01
    position, direction, simulated = 5.0, 1.0, []
    for _ in range(4000):
        simulated.append(position)
        position += direction * velocity * dt
        if position > high:
            position, direction = 2 * high - position, -direction
        elif position < low:
            position, direction = 2 * low - position, -direction
    free = 5.0 + velocity * dt * np.arange(4000)
    np.testing.assert_allclose(bounce(free, low, high), simulated, atol=1e-6)


@pytest.mark.parametrize(
    "shape,area_in_radii",
    [
        ("disc", np.pi),
        ("square", (2 * 0.72) ** 2),
        ("diamond", 2.0),
        ("ring", np.pi * (1 - 0.55**2)),
        ("triangle", 3 * np.sqrt(3) * 0.55**2),  # equilateral, inradius 0.55
        ("hexagon", 2 * np.sqrt(3) * 0.88**2),  # regular, inradius 0.88
        ("cross", 2 * (2 * 0.95) * (2 * 0.33) - (2 * 0.33) ** 2),
        ("bar", 2 * 2 * 0.42),
    ],
)
def test_shape_coverage_has_the_shapes_area(shape, area_in_radii):
    radius = 40.0
    grid = np.arange(-60, 61, dtype=np.float64) + 0.3  # off-centre: edges cut pixels at all phases
    u, v = np.meshgrid(grid / radius, grid / radius)
    coverage = object_coverage(shape, u, v, radius)
    assert coverage.sum() == pytest.approx(area_in_radii * radius**2, rel=0.015)
    assert coverage.min() >= 0 and coverage.max() <= 1
    assert set(SHAPES) == {spec.shape for spec in CLASS_SPECS}


@pytest.mark.parametrize("spec", CLASS_SPECS, ids=lambda s: s.name)
def test_each_class_sound_keeps_its_energy_in_its_own_band(spec):
    rate = 16000
    wave = class_sound(spec, rate * 2, rate, np.random.default_rng(spec.index))
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.1, rel=1e-6)
    total = band_energy(wave, rate, (0, rate / 2))
    assert band_energy(wave, rate, spec.band_hz) > 0.85 * total
    for other in CLASS_SPECS:
        if other is not spec:
            assert band_energy(wave, rate, other.band_hz) < 0.01 * band_energy(wave, rate, spec.band_hz)


def test_envelope_is_full_in_audible_frames_and_fades_inside_silent_ones():
    audible = np.array([1, 1, 0, 0, 0, 1], dtype=bool)
    gain = audible_envelope(audible, fps=10, n_samples=9600, rate=16000)
    per_frame = 1600
    for k, on in enumerate(audible):
        part = gain[k * per_frame : (k + 1) * per_frame]
        if on:
            assert np.all(part == 1.0)
    silent = gain[2 * per_frame : 5 * per_frame]
    assert silent[0] > 0.99 and silent[-1] > 0.99  # fades touch the audible neighbours
    assert np.all(silent[160:-160] == 0.0)  # 10 ms fades
    assert np.all(np.diff(silent[:160]) <= 0) and np.all(np.diff(silent[-160:]) >= 0)


# --- determinism, reruns, interruption ---------------------------------------------------------


def test_same_seed_gives_the_same_truth_and_pixels_and_another_seed_does_not(generated, tmp_path):
    again = tmp_path / "again"
    generate(again, CONFIG)
    assert (again / "truth.csv").read_bytes() == (generated / "truth.csv").read_bytes()
    assert (again / "distractors.csv").read_bytes() == (generated / "distractors.csv").read_bytes()
    for path in sorted(generated.glob("*/*.mp4")):
        twin = again / path.relative_to(generated)
        np.testing.assert_array_equal(decoded_frames(twin), decoded_frames(path))
        probe, probe_twin = media.probe(path), media.probe(twin)
        np.testing.assert_array_equal(media.decode_audio_mono(probe_twin, 0, 3)[0], media.decode_audio_mono(probe, 0, 3)[0])
    # A video depends on its own seed only: fewer videos per class leave the first ones unchanged.
    fewer = {p.video_id: p for p in plan_set(replace(CONFIG, videos_per_class=1))}
    for plan in plan_set(CONFIG):
        if plan.video_id in fewer:
            np.testing.assert_array_equal(plan.sounding.x, fewer[plan.video_id].sounding.x)
    other = {p.video_id: p for p in plan_set(replace(CONFIG, seed=8))}
    assert all(not np.allclose(p.sounding.x, other[p.video_id].sounding.x) for p in plan_set(CONFIG))


class _InterruptAfter(Progress):
    """Acts like Ctrl-C once `frames` frames are done (mid-video when not a multiple of the chunk)."""

    def __init__(self, frames: int) -> None:
        super().__init__(enabled=False)
        self.left = frames

    def advance_frames(self, n: int) -> None:
        self.left -= n
        if self.left <= 0:
            raise KeyboardInterrupt


def test_interrupted_run_leaves_no_partial_video_and_a_rerun_finishes_the_same_set(generated, tmp_path):
    out = tmp_path / "set"
    first = generate(out, CONFIG, _InterruptAfter(30 + 16))  # one video, then inside the second
    assert first.interrupted and first.written == 1 and not first.ok
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["c0_disc_tone_000.mp4", "synth.json"]
    assert json.loads((out / "synth.json").read_text())["status"] == "in_progress"

    result = CliRunner().invoke(main, ["synth", str(out), *cli_args(CONFIG), "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["written"], summary["skipped"]) == (5, 1)
    assert (out / "truth.csv").read_bytes() == (generated / "truth.csv").read_bytes()
    for path in sorted(generated.glob("*/*.mp4")):
        np.testing.assert_array_equal(decoded_frames(out / path.relative_to(generated)), decoded_frames(path))


def cli_args(config: SynthConfig) -> list[str]:
    return [
        "--classes", str(config.classes), "--videos-per-class", str(config.videos_per_class),
        "--seconds", str(config.seconds), "--fps", str(config.fps), "--width", str(config.width),
        "--height", str(config.height), "--distractors", str(config.distractors),
        "--silent-fraction", str(config.silent_fraction), "--seed", str(config.seed),
    ]  # fmt: skip


def test_rerun_keeps_videos_and_other_settings_need_overwrite(tmp_path):
    small = SynthConfig(classes=2, videos_per_class=2, seconds=0.5, width=32, height=32)
    out = tmp_path / "set"
    generate(out, small)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/*.mp4")}
    rerun = generate(out, small)
    assert (rerun.written, rerun.skipped) == (0, 4) and rerun.truth == str(out / "truth.csv")
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.mp4")} == mtimes

    with pytest.raises(SynthError, match=r"other settings \(videos_per_class 2 -> 1\).*--overwrite"):
        generate(out, replace(small, videos_per_class=1))
    replaced = generate(out, replace(small, videos_per_class=1), overwrite=True)
    assert replaced.written == 2
    assert sorted(p.name for p in out.glob("*/*.mp4")) == ["c0_disc_tone_000.mp4", "c1_square_noise_000.mp4"]
    assert set(read_truth(out)) == {"c0_disc_tone_000", "c1_square_noise_000"}


def test_cli_interrupt_exits_130_with_a_summary(tmp_path, monkeypatch):
    import pipeline.synth.generate as synth

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_video", interrupted)
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "set"), "--quiet"])
    assert result.exit_code == 130
    assert "interrupted after 0 of 24 videos" in result.output
    assert not (tmp_path / "set" / "truth.csv").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--fps", "0"], "--fps must be positive, got 0.0"),
        (["--width", "20"], "frame size 20x128 is too small for the objects"),
        (["--classes", "1"], "--classes must be between 2 and 8, got 1"),
        (["--classes", "9"], "--classes must be between 2 and 8, got 9"),
        (["--silent-fraction", "1"], "--silent-fraction must be in [0, 1), got 1.0"),
        (["--seconds", "0.2"], "gives 2 frame(s); at least 3 are needed"),
        (["--videos-per-class", "0"], "--videos-per-class must be at least 1"),
        (["--distractors", "-1"], "--distractors must be 0 or more"),
    ],
)
def test_bad_options_are_refused_with_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "set"), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not (tmp_path / "set").exists()


def test_a_foreign_non_empty_folder_is_refused_with_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path}: folder is not empty and holds no synth.json; choose an empty or new folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- the next stage reads it -------------------------------------------------------------------


def test_extract_runs_cleanly_on_a_generated_set(generated, tmp_path):
    config = ExtractConfig(size=64, flow=FlowConfig("dis", 0.5, "ultrafast"))
    summary = run_extract(generated, tmp_path / "ws", config, SchedulerConfig(workers=1))
    assert (summary.done, summary.failed) == (6, 0) and summary.ok
    root = fstore.SCHEMA.open_for_reading(fstore.SCHEMA.path(tmp_path / "ws"))
    assert root.attrs["classes"] == [spec.name for spec in CLASS_SPECS[:3]]
    for video_id, track in read_truth(generated).items():
        arrays = zarr.open_group(str(fstore.SCHEMA.path(tmp_path / "ws")), mode="r", path=f"videos/{video_id}")
        assert arrays["frames"].shape == (30, 64, 64, 3)
        # The drifting background and the objects are motion DIS sees.
        flow = arrays["flow"][1:].astype(np.float32)
        assert np.median(np.hypot(flow[:, 0], flow[:, 1])) > 0.05
        # Windows wholly inside the silent stretch hear nothing of the class band; wholly audible ones do.
        audio = arrays["audio"][:].astype(np.float32)
        freqs = arrays["freq"][:]
        low, high = class_by_name(track.label).band_hz
        in_band = audio[:, (freqs >= low) & (freqs <= high), :].mean(axis=(1, 2))
        window = 5  # a 0.5 s window starting at frame k covers frames k .. k+4
        covered = [track.audible[k : k + window] for k in range(30 - window + 1)]
        loud = [in_band[k] for k, c in enumerate(covered) if c.all()]
        quiet = [in_band[k] for k, c in enumerate(covered) if not c.any()]
        assert quiet and loud and min(loud) > max(quiet) + 1.0, video_id
