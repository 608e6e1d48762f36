"""The store schema in one place: typed attributes, declared keys only, every array preallocated."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import zarr

from stores import features as fstore
from stores import predictions as pred_store
from stores import pseudo as pstore
from stores import zarr_io
from stores.schema import SCHEMA_VERSION, schemas


def test_each_kind_declares_its_arrays_and_attributes_once():
    assert [s.kind for s in schemas()] == ["features", "pseudo", "predictions", "scam-cache", "sta-cache"]
    assert [s.file_name for s in schemas()] == ["features.zarr", "pseudo.zarr", "predictions.zarr", "scam-cache.zarr",
                                                "sta-cache.zarr"]  # fmt: skip
    for schema in schemas():
        names = [spec.name for spec in schema.arrays]
        assert len(names) == len(set(names)) and all(spec.doc for spec in schema.arrays), schema.kind
        for cls in (schema.store_type, schema.video_type):
            assert all(f.metadata.get("doc") for f in dataclasses.fields(cls)), cls.__name__


def test_attributes_are_written_and_read_as_their_dataclass(tmp_path):
    schema = fstore.SCHEMA
    root = schema.open_for_writing(tmp_path / "f.zarr")
    schema.update_store(root, classes=["cat", "dog"])
    stored = schema.read_store(root)
    assert (stored.store_kind, stored.schema_version, stored.classes, stored.failures) == ("features", SCHEMA_VERSION,
                                                                                          ["cat", "dog"], {})
    assert set(dict(root.attrs)) >= {f.name for f in dataclasses.fields(schema.store_type)}  # all declared, at once
    video = fstore.FeaturesVideo(label="cat", n_frames=3, height=4, width=5, has_audio=True, settings={"size": 5})
    shapes = fstore.VideoShape(3, 4, 5, 2, 2, 7, 6).array_shapes()
    group = schema.create_video(root, "a", video, shapes)
    assert {name for name, _ in group.arrays()} == {spec.name for spec in schema.arrays}
    assert group["frames"].shape == (3, 4, 5, 3) and group["audio"].shape == (3, 7, 6)
    read = schema.read_video(root, "a")
    assert read == dataclasses.replace(video, status=zarr_io.STATUS_IN_PROGRESS)
    schema.mark_complete(group, "fp", 7, segments_done=[[0, 3]])
    read = schema.read_video(root, "a")
    assert (read.status, read.fingerprint, read.algorithm_version, read.segments_done) == ("complete", "fp", 7, [[0, 3]])
    assert schema.complete_videos(root) == ["a"] and schema.read_video(root, "missing") is None


def test_undeclared_attributes_are_refused_and_unknown_ones_ignored(tmp_path):
    schema = pred_store.SCHEMA
    root = schema.open_for_writing(tmp_path / "p.zarr")
    group = schema.create_video(root, "v", pred_store.PredictionsVideo(n_frames=2), pred_store.array_shapes(2, 3, 4))
    with pytest.raises(KeyError, match="PredictionsVideo declares no attribute labelz"):
        schema.update_video(group, labelz="x")
    with pytest.raises(KeyError, match="declares no attribute colour"):
        schema.update_store(root, colour="red")
    with pytest.raises(ValueError, match="no shape for array"):
        schema.create_video(root, "w", pred_store.PredictionsVideo(), {"saliency": (1, 2, 2)})
    group.attrs["written_by_an_older_avfix"] = 1  # read back without it, the rest intact
    assert schema.read_video(root, "v").n_frames == 2


def test_forget_completion_drops_the_partial_reuse_records(tmp_path):
    schema = pstore.SCHEMA
    root = schema.open_for_writing(tmp_path / "p.zarr")
    group = schema.create_video(root, "v", pstore.PseudoVideo(label="cat"), pstore.array_shapes(2, 8))
    schema.update_video(group, coarse_fingerprint="c")
    schema.mark_complete(group, "fp", 1)
    assert schema.forget_completion(tmp_path / "p.zarr") == 1
    read = schema.read_video(zarr_io.open_root(tmp_path / "p.zarr"), "v")
    assert (read.status, read.coarse_fingerprint, read.label) == ("in_progress", None, "cat")


def test_a_worker_finds_a_group_created_since_the_metadata_was_consolidated(tmp_path):
    import zarr

    path = tmp_path / "pseudo.zarr"
    root = pstore.SCHEMA.open_for_writing(path)
    zarr_io.new_video_group(root, "old", {})
    zarr_io.consolidate(path)
    zarr_io.new_video_group(zarr_io.open_root(path, mode="a"), "new", {})  # a coordinator, before its workers
    # zarr's own opening answers from the snapshot, which does not know the new group...
    assert "videos/new" not in zarr.open_group(str(path), mode="r+")
    # ...the workers' opening reads the store itself.
    assert pstore.open_video(path, "new").path == "videos/new"
    assert pred_store.open_video(path, "old").path == "videos/old"
    with pytest.raises(KeyError, match="no group for video 'gone'"):
        zarr_io.open_video_for_rows(path, "gone")


@pytest.mark.parametrize("frame_codec", ["jpeg", "lossless"])
def test_arrays_made_by_writing_their_metadata_are_what_zarr_makes(tmp_path, frame_codec):
    encodings = fstore.encodings(frame_codec, 93, "420", 1 / 32)
    ours = zarr.open_group(str(tmp_path / "ours.zarr"), mode="w", zarr_format=3)
    theirs = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w", zarr_format=3)
    checked = 0
    for schema in schemas():
        for k, spec in enumerate(schema.arrays):
            encoding = encodings.get(spec.name) if schema is fstore.SCHEMA else None
            for length in (1, 7, spec.chunk_t + 3):  # one chunk shorter than its length, one longer
                shape = (length, *[3] * (len(spec.dims) - 1))  # (t, y, x, 3) frames as JPEG takes them
                name = f"{schema.kind}-{k}-{length}"
                assert zarr_io.write_array_metadata(ours.require_group(name), spec, shape, encoding)
                chunks = (min(spec.chunk_t, length), *shape[1:])
                theirs.require_group(name).create_array(
                    spec.name, shape=shape, chunks=chunks, dtype=spec.dtype, fill_value=spec.fill_value,
                    dimension_names=spec.dims, chunk_key_encoding=zarr_io.CHUNK_KEYS,
                    **({"filters": encoding.filters, "serializer": encoding.serializer,
                        "compressors": encoding.compressors} if encoding else {"compressors": zarr_io.codecs(spec.zstd_level)}),
                )  # fmt: skip
                path = f"{name}/{spec.name}/zarr.json"
                assert json.loads((tmp_path / "ours.zarr" / path).read_text()) == json.loads(
                    (tmp_path / "theirs.zarr" / path).read_text()), path  # fmt: skip
                checked += 1
    assert checked == 3 * sum(len(schema.arrays) for schema in schemas())


def test_an_array_made_again_loses_its_old_chunks_and_reads_through_zarr(tmp_path):
    root = zarr_io.open_root(tmp_path / "s.zarr", mode="a")
    group = root["videos"].create_group("v")
    spec = zarr_io.ArraySpec("maps", ("t", "y"), "float16", 4, fill_value=0.5)
    first = zarr_io.create_array(group, spec, (8, 3))
    first[:] = np.ones((8, 3), dtype=np.float16)
    again = zarr_io.create_array(group, spec, (5, 3))
    assert again.shape == (5, 3) and again.chunks == (4, 3)
    assert sorted(p.name for p in (tmp_path / "s.zarr/videos/v/maps").iterdir()) == ["zarr.json"]
    again[:] = np.full((5, 3), 2.0, dtype=np.float16)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr/videos/v/maps"), mode="r")[:],
                                  np.full((5, 3), 2.0, dtype=np.float16))  # fmt: skip


def test_in_a_store_that_is_not_a_folder_arrays_are_made_by_zarr():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    spec = zarr_io.ArraySpec("maps", ("t", "y"), "float16", 4)
    assert not zarr_io.write_array_metadata(group, spec, (6, 2))
    made = zarr_io.create_array(group, spec, (6, 2))
    assert made.shape == (6, 2) and made.metadata.chunk_key_encoding.separator == "."


def test_a_video_group_is_what_zarr_makes_and_a_remade_one_starts_empty(tmp_path):
    attrs = {"label": "dog", "n_frames": 3, "settings": {"size": [356, 356]}, "fps": 29.97}
    root = zarr_io.open_root(tmp_path / "ours.zarr", mode="a")
    group = zarr_io.new_video_group(root, "v", attrs)
    theirs = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w", zarr_format=3).create_group("v")
    theirs.update_attributes({**attrs, "status": zarr_io.STATUS_IN_PROGRESS})
    ours_json = json.loads((tmp_path / "ours.zarr/videos/v/zarr.json").read_text())
    assert ours_json == json.loads((tmp_path / "theirs.zarr/v/zarr.json").read_text())
    assert dict(group.attrs) == {**attrs, "status": "in_progress"}
    zarr_io.create_array(group, zarr_io.ArraySpec("maps", ("t",), "float16", 4), (8,))[:] = np.ones(8, np.float16)
    zarr_io.consolidate(tmp_path / "ours.zarr")  # the root's metadata now lists every node
    again = zarr_io.new_video_group(zarr_io.open_root(tmp_path / "ours.zarr", mode="r+"), "v", {"label": "cat"})
    assert dict(again.attrs) == {"label": "cat", "status": "in_progress"} and list(again.array_keys()) == []
    assert sorted(p.name for p in (tmp_path / "ours.zarr/videos/v").iterdir()) == ["zarr.json"]


def test_in_a_store_that_is_not_a_folder_video_groups_are_made_by_zarr():
    root = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    root.create_group(zarr_io.VIDEOS)
    zarr_io.new_video_group(root, "v", {"label": "dog"})
    group = zarr_io.new_video_group(root, "v", {"label": "cat"})
    assert dict(group.attrs) == {"label": "cat", "status": "in_progress"}


def test_making_a_video_in_a_consolidated_store_never_reads_the_root_metadata(tmp_path, monkeypatch):
    # The root's zarr.json holds every node's metadata once a run has consolidated the store: zarr-python's
    # create_group / create_array read it (and the parents') for each new node, a cost in proportion to
    # the store (4.6 s per video at 4,000 videos, benchmarks/store_scale.py).
    schema = fstore.SCHEMA
    schema.open_for_writing(tmp_path / "f.zarr")
    shape = fstore.VideoShape(n_frames=20, height=8, width=8, flow_height=2, flow_width=2, n_freq=5, n_time=3)
    video = fstore.FeaturesVideo(label="dog", n_frames=20)
    schema.create_video(schema.open_for_writing(tmp_path / "f.zarr"), "first", video, shape.array_shapes())
    zarr_io.consolidate(tmp_path / "f.zarr")
    root = schema.open_for_writing(tmp_path / "f.zarr")
    keys: list[str] = []
    read = zarr.storage.LocalStore.get

    async def counted(self, key, *args, **kwargs):  # noqa: ANN001, ANN202
        keys.append(key)
        return await read(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counted)
    group = schema.create_video(root, "second", video, shape.array_shapes(), fstore.encodings(flow_step=1 / 32))
    assert keys and "zarr.json" not in keys, keys  # only the new group's and its parent's were read
    assert sorted(group.array_keys()) == sorted(spec.name for spec in schema.arrays)
