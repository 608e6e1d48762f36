"""Finding inputs: folder layout, CSV manifests, bad ids and bad manifests."""

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest

from pipeline.common.inputs import InputError, discover
from stores.records import safe_video_id, video_id_problem


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_layout_gives_class_from_folder_and_sorted_classes(tmp_path):
    touch(tmp_path / "violin" / "v1.mp4")
    touch(tmp_path / "dog" / "d1.mkv")
    touch(tmp_path / "dog" / "notes.txt")  # not a video extension: named, not silently skipped
    found = discover(tmp_path)
    assert [(r.video_id, r.label) for r in found.records] == [("d1", "dog"), ("v1", "violin")]
    assert found.classes == ["dog", "violin"]
    assert [(p.video_id, p.reason) for p in found.problems] == [("notes", "not a video file (extension .txt)")]


def test_manifest_relative_paths_resolve_against_its_folder(tmp_path):
    touch(tmp_path / "media" / "a.mp4")
    absolute = touch(tmp_path / "abs" / "b.mp4")  # listed by its absolute path
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label\nmedia/a.mp4,cat\n{absolute},dog\n")
    found = discover(manifest)
    assert found.records[0].path == tmp_path / "media" / "a.mp4"
    assert str(found.records[1].path) == str(absolute)
    assert found.classes == ["cat", "dog"]


def test_manifest_without_label_column_is_a_clear_error(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,class\na.mp4,cat\n")
    with pytest.raises(InputError, match=r"list.csv: no 'label' column \(columns: path, class"):
        discover(manifest)


def test_duplicate_and_escaping_ids_are_problems_not_crashes(tmp_path):
    for name in ("a.mp4", "sub/a.mp4", "b.mp4"):  # usable files: only they can clash
        touch(tmp_path / name)
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,id\na.mp4,cat,\nsub/a.mp4,cat,\nb.mp4,dog,../../etc\n")
    found = discover(manifest)
    assert [r.video_id for r in found.records] == ["a"]
    reasons = {p.path.split("/")[-1] + ":" + p.video_id: p.reason for p in found.problems}
    assert "duplicate video id 'a'" in reasons["a.mp4:a"]
    assert "would escape the store" in reasons["b.mp4:../../etc"]


def test_missing_source_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder or manifest"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos found"):
        discover(tmp_path / "empty")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x\\y", ".hidden", "a b"])
def test_video_id_problem_rejects_unsafe_ids(bad):
    assert video_id_problem(bad) is not None


def test_video_id_problem_accepts_ave_ids():
    assert video_id_problem("-0A9suni5YA") is None  # YouTube ids may start with "-"
    assert video_id_problem("Y0A9suni5YA.part1") is None


# --- every entry named, derived ids -----------------------------------------------------------------

ID_ADVICE = "use letters, digits, '_', '-', '.' in the id column, or leave it empty to derive one from the file name"


def write_wav(path):
    """One second of silence, 16 kHz mono: a real audio-only file."""
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000)
    return path


def write_m4a(path):
    """A short AAC track in an MPEG-4 container, no video stream."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for start in range(0, 4096, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def problems_by_name(found):
    return {Path(p.path).name: (p.video_id, p.reason) for p in found.problems}


def test_class_folder_names_every_entry_that_is_not_a_video(tmp_path):
    cat = tmp_path / "cat"
    touch(cat / "good.mp4")
    write_wav(cat / "voice.wav")
    write_m4a(cat / "song.m4a")
    os.symlink("loop.mp4", cat / "loop.mp4")
    os.symlink("nowhere.mp4", cat / "gone.mp4")
    (cat / "x.mp4").mkdir()
    touch(cat / "notes.txt")
    touch(cat / "README")
    (cat / "empty.mkv").write_bytes(b"")
    touch(cat / ".x.mp4.partial")  # hidden: avfix synth's half-written file, not an input
    touch(cat / ".DS_Store")
    found = discover(tmp_path)
    assert [(r.video_id, r.label, r.source_name) for r in found.records] == [("good", "cat", "good.mp4")]
    assert problems_by_name(found) == {
        "voice.wav": ("voice", "audio-only file (.wav): no video stream"),
        "song.m4a": ("song", "audio-only file (.m4a): no video stream"),
        "loop.mp4": ("loop", "symlink loop"),
        "gone.mp4": ("gone", "broken symlink (its target nowhere.mp4 does not exist)"),
        "x.mp4": ("x", "is a folder, not a video file"),
        "notes.txt": ("notes", "not a video file (extension .txt)"),
        "README": ("README", "not a video file (no extension)"),
        "empty.mkv": ("empty", "empty file (0 bytes)"),
    }
    assert {Path(p.path).parent for p in found.problems} == {cat}


def test_flat_folder_without_tags_names_audio_loops_and_folders(tmp_path):
    touch(tmp_path / "clip.mp4")
    write_wav(tmp_path / "voice.wav")
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    touch(tmp_path / "truth.csv")  # beside the videos: manifests and truth tables are not inputs
    touch(tmp_path / ".y.mp4.partial")
    (tmp_path / "sub" / "x.mp4").mkdir(parents=True)
    touch(tmp_path / "sub" / "c.mkv")
    found = discover(tmp_path, require_labels=False)
    assert [(r.video_id, r.label) for r in found.records] == [("clip", ""), ("c", "sub")]
    assert problems_by_name(found) == {
        "loop.mp4": ("loop", "symlink loop"),
        "voice.wav": ("voice", "audio-only file (.wav): no video stream"),
        "x.mp4": ("x", "is a folder, not a video file"),
    }


def test_tagged_folder_names_videos_outside_any_class_folder(tmp_path):
    touch(tmp_path / "cat" / "a.mp4")
    touch(tmp_path / "stray.mp4")
    touch(tmp_path / "truth.csv")
    found = discover(tmp_path)
    assert [r.video_id for r in found.records] == ["a"]
    assert problems_by_name(found) == {
        "stray.mp4": ("stray", "not in a class folder (expected <class>/<video file>: the folder's name is the tag)")
    }


def test_folder_without_any_video_file_is_still_one_error(tmp_path):
    touch(tmp_path / "cat" / "notes.txt")
    write_wav(tmp_path / "cat" / "voice.wav")
    with pytest.raises(InputError, match="no videos found"):
        discover(tmp_path)


def test_manifest_symlink_loop_is_named_as_such(tmp_path):
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nloop.mp4,cat\n")
    found = discover(manifest)
    assert not found.records
    problems = [(p.video_id, p.path, p.reason) for p in found.problems]
    assert problems == [("loop", str(tmp_path / "loop.mp4"), "symlink loop")]


def test_failed_rows_do_not_claim_their_id_but_valid_duplicates_still_clash(tmp_path):
    write_m4a(tmp_path / "a" / "voice.m4a")
    os.symlink("voice.mp4", tmp_path / "voice.mp4")
    touch(tmp_path / "b" / "voice.mp4")
    touch(tmp_path / "c" / "voice.mp4")
    touch(tmp_path / "d.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,label,id\n"
        "a/voice.m4a,cat,\n"  # audio only: a problem, so 'voice' stays free
        "voice.mp4,cat,\n"  # symlink loop: a problem too
        "missing.mp4,cat,d\n"  # no such file: 'd' stays free
        "d.mp4,,\n"  # empty label: a problem, 'd' stays free
        "b/voice.mp4,cat,\n"  # the first usable 'voice'
        "d.mp4,dog,\n"
        "c/voice.mp4,dog,\n"  # usable, but 'voice' is taken: the duplicate names the first
    )
    found = discover(manifest)
    records = [(r.video_id, r.path) for r in found.records]
    assert records == [("voice", tmp_path / "b" / "voice.mp4"), ("d", tmp_path / "d.mp4")]
    assert [(p.video_id, p.reason) for p in found.problems] == [
        ("voice", "audio-only file (.m4a): no video stream"),
        ("voice", "symlink loop"),
        ("d", "no such file"),
        ("d", "empty label"),
        ("voice", f"duplicate video id 'voice' (already used by {tmp_path / 'b' / 'voice.mp4'})"),
    ]


def test_real_file_names_get_stable_safe_ids_and_keep_their_name(tmp_path):
    touch(tmp_path / "cat" / "my clip ünï — ok.mp4")
    touch(tmp_path / "cat" / "plain-id_1.2.mp4")
    found = discover(tmp_path)
    # The hash is SHA-1 of the name: the same on every machine, so it is written out here.
    assert [(r.video_id, r.source_name) for r in found.records] == [
        ("my_clip_uni_ok-c7f825fe", "my clip ünï — ok.mp4"),
        ("plain-id_1.2", "plain-id_1.2.mp4"),
    ]
    assert not found.problems


def test_names_that_read_the_same_get_different_ids_and_a_real_clash_is_a_duplicate(tmp_path):
    touch(tmp_path / "cat" / "ünï clip.mp4")
    touch(tmp_path / "cat" / "uni clip.mp4")
    clashing_id = safe_video_id("ünï clip")
    touch(tmp_path / "dog" / f"{clashing_id}.mp4")  # already a safe name: it is its own id
    found = discover(tmp_path)
    ids = {r.source_name: r.video_id for r in found.records}
    assert ids["uni clip.mp4"].startswith("uni_clip-") and ids["ünï clip.mp4"].startswith("uni_clip-")
    assert ids["uni clip.mp4"] != ids["ünï clip.mp4"]
    assert [(p.video_id, p.reason) for p in found.problems] == [
        (clashing_id, f"duplicate video id {clashing_id!r} (already used by {tmp_path / 'cat' / 'ünï clip.mp4'})")
    ]


def test_an_unsafe_id_column_is_not_rewritten_and_says_what_to_do(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b c.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label,id\na.mp4,cat,my clip\nb c.mp4,cat,\n")
    found = discover(manifest)
    assert [(p.video_id, p.reason) for p in found.problems] == [
        ("my clip", f"video id 'my clip' has characters other than letters, digits, '_', '-', '.': {ID_ADVICE}")
    ]
    assert [r.video_id for r in found.records] == [safe_video_id("b c")]


def test_manifest_that_is_not_utf8_is_one_clear_error(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_bytes("path,label\nclip_ü.mp4,cat\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"list.csv: not UTF-8 text .*save the manifest as UTF-8"):
        discover(manifest)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("-0A9suni5YA", "-0A9suni5YA"),  # safe names are their own id: existing workspaces keep theirs
        ("clip_", "clip_"),
        ("my clip ünï — ok", "my_clip_uni_ok-c7f825fe"),
        ("a..b", "a.b-" + hashlib.sha1(b"a..b").hexdigest()[:8]),
        (".hidden", "hidden-" + hashlib.sha1(b".hidden").hexdigest()[:8]),
        ("日本語", "-" + hashlib.sha1("日本語".encode()).hexdigest()[:8]),
        ("", "-da39a3ee"),
        ("a\n", "a-" + hashlib.sha1(b"a\n").hexdigest()[:8]),
    ],
)
def test_safe_video_id(name, expected):
    assert safe_video_id(name) == expected
    assert video_id_problem(safe_video_id(name)) is None


def test_safe_video_id_is_the_same_for_composed_and_decomposed_names():
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    expected = "cafe-" + hashlib.sha1(composed.encode()).hexdigest()[:8]
    assert safe_video_id(composed) == safe_video_id(decomposed) == expected


def test_video_id_problem_rejects_a_trailing_newline():
    assert video_id_problem("clip\n") is not None
