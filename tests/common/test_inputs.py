"""Finding inputs: folder layout, CSV manifests, bad ids and bad manifests."""

import pytest

from pipeline.common.inputs import InputError, discover
from stores.records import video_id_problem


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_layout_gives_class_from_folder_and_sorted_classes(tmp_path):
    touch(tmp_path / "violin" / "v1.mp4")
    touch(tmp_path / "dog" / "d1.mkv")
    touch(tmp_path / "dog" / "notes.txt")  # not a video extension
    found = discover(tmp_path)
    assert [(r.video_id, r.label) for r in found.records] == [("d1", "dog"), ("v1", "violin")]
    assert found.classes == ["dog", "violin"]
    assert not found.problems


def test_manifest_relative_paths_resolve_against_its_folder(tmp_path):
    touch(tmp_path / "media" / "a.mp4")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nmedia/a.mp4,cat\n/abs/b.mp4,dog\n")
    found = discover(manifest)
    assert found.records[0].path == tmp_path / "media" / "a.mp4"
    assert str(found.records[1].path) == "/abs/b.mp4"
    assert found.classes == ["cat", "dog"]


def test_manifest_without_label_column_is_a_clear_error(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,class\na.mp4,cat\n")
    with pytest.raises(InputError, match=r"list.csv: no 'label' column \(columns: path, class"):
        discover(manifest)


def test_duplicate_and_escaping_ids_are_problems_not_crashes(tmp_path):
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
