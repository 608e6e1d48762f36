"""The train stage: samples from the stores, the chunk-aware batch order, checkpoints, exact resume,
DDP on two CPU processes, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import interruptible, write_sta_stores

from pipeline.train import checkpoints
from pipeline.train.checkpoints import load_checkpoint, read_header
from pipeline.train.config import STATrainConfig, TrainError
from pipeline.train.model import build_sta
from pipeline.train.run import run_train
from pipeline.workspace.presets import preset_config
from stores import features as fstore
from stores import pseudo as pstore
from stores.samples import ChunkBatchSampler, STASamples, index_videos

REPO = Path(__file__).resolve().parents[2]


def quick(**overrides) -> STATrainConfig:
    base = {"epochs": 2, "batch_size": 8, "num_workers": 0, "checkpoint_every": 3, "log_every": 2}
    return replace(preset_config("cpu", "train"), **{**base, **overrides})


def dataset(ws: Path, **kwargs) -> tuple[STASamples, STASamples]:
    videos, events, _ = index_videos(fstore.SCHEMA.path(ws), pstore.SCHEMA.path(ws))
    train = [v for v in videos if v.split == "train"]
    val = [v for v in videos if v.split == "val"]
    return (STASamples(fstore.SCHEMA.path(ws), pstore.SCHEMA.path(ws), train, events, **kwargs),
            STASamples(fstore.SCHEMA.path(ws), pstore.SCHEMA.path(ws), val, events, **kwargs))  # fmt: skip


def test_samples_are_frames_with_a_pseudo_gt_with_clamped_neighbours(tmp_path):
    stores = write_sta_stores(tmp_path, n_videos=3, n_frames=20, gt_every=3, val_videos=1)
    train, val = dataset(tmp_path, flow=True)
    assert {item.video_id for item in train.items} == {"vid00", "vid01"}  # the split of pseudo.zarr
    assert [item.video_id for item in val.items] == ["vid02"] * 7
    assert [item.t for item in train.items if item.video_id == "vid00"] == [0, 3, 6, 9, 12, 15, 18]
    features = zarr.open_group(str(tmp_path / "features.zarr"), mode="r", path="videos/vid00")
    pseudo = zarr.open_group(str(tmp_path / "pseudo.zarr"), mode="r", path="videos/vid00")
    first, last = train[0], train[6]  # frames 0 and 18 (of 20)
    assert first["frames"].shape == (3, 64, 64, 3) and first["frames"].dtype == torch.uint8
    np.testing.assert_array_equal(first["frames"].numpy(), features["frames"][[0, 0, 1]])
    np.testing.assert_array_equal(last["frames"].numpy(), features["frames"][[17, 18, 19]])
    assert first["pseudo_gt"].shape == (32, 32) and first["pseudo_gt"].dtype == torch.float16
    np.testing.assert_array_equal(last["pseudo_gt"].numpy(), pseudo["pseudo_gt"][18])
    np.testing.assert_array_equal(last["audio"].numpy(), features["audio"][18].astype(np.float32))
    assert float(last["event_prob"]) == pytest.approx(float(pseudo["event_prob"][18]))
    assert bool(last["has_audio"]) and last["flow"].shape == (2, 32, 32)
    # The bright square sits where the pseudo-GT peaks (the helper's contract the other tests rely on).
    peak = np.unravel_index(np.argmax(last["pseudo_gt"].float().numpy()), (32, 32))
    np.testing.assert_allclose(np.array(peak) * 2 + 1, stores.blob_centres["vid00"][18], atol=2)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker-processes"])
def test_readers_ahead_give_the_same_batches_in_the_same_order(tmp_path, processes):
    write_sta_stores(tmp_path, n_videos=4, n_frames=20, val_videos=1)
    train, _ = dataset(tmp_path)
    sampler = ChunkBatchSampler(train.chunk_blocks(), 8, window=2, streams=2, seed=1)
    alone = [b["index"] for b in train.loader(sampler, num_workers=0)]
    ahead = list(train.loader(sampler, num_workers=2, processes=processes))
    assert len(ahead) == len(alone) == 60 // 8
    for batch, indices in zip(ahead, alone):
        torch.testing.assert_close(batch["index"], indices)
        for name in ("frames", "audio", "pseudo_gt", "event_prob", "has_audio"):  # batch = its samples, stacked
            expected = np.stack([train[int(i)][name].numpy() for i in indices])
            np.testing.assert_array_equal(batch[name].numpy(), expected)


def test_a_reader_threads_error_reaches_the_consumer(tmp_path):
    write_sta_stores(tmp_path, n_videos=2, n_frames=16, val_videos=1)
    train, _ = dataset(tmp_path)

    class Broken(STASamples):
        def __getitems__(self, indices):
            if 9 in indices:
                raise OSError("chunk 0 of frames is unreadable")
            return super().__getitems__(indices)

    broken = Broken.__new__(Broken)
    broken.__dict__.update(train.__dict__)
    batches = [[0, 1], [2, 3], [8, 9], [10, 11]]
    loader = iter(broken.loader(batches, num_workers=2))
    assert next(loader)["index"].tolist() == [0, 1] and next(loader)["index"].tolist() == [2, 3]
    with pytest.raises(OSError, match="chunk 0 of frames is unreadable"):
        next(loader)


def test_chunk_batch_sampler_order_is_resumable_sharded_and_chunk_local():
    blocks = [list(range(start, min(start + 16, 200))) for start in range(0, 200, 16)]  # 13 chunks
    block_of = {i: k for k, block in enumerate(blocks) for i in block}
    sampler = ChunkBatchSampler(blocks, 10, window=3, seed=7)
    epoch0 = list(sampler)
    assert len(epoch0) == len(sampler) == 20
    assert sorted(i for batch in epoch0 for i in batch) == list(range(200))
    assert all(len({block_of[i] for i in batch}) <= 2 * 3 for batch in epoch0)  # reads few chunks
    assert epoch0 == list(sampler)  # a pure function of (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0, start_batch=12)
    assert list(sampler) == epoch0[12:] and len(sampler) == 8
    ranks = [ChunkBatchSampler(blocks, 5, window=3, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for joint, half0, half1 in zip(epoch0, *ranks):
        assert half0 + half1 == joint
    # Two interleaved streams (one per loader worker): batch k comes from stream k mod 2, and the two
    # streams' batches read disjoint chunks, so each worker decodes only its own.
    streamed = list(ChunkBatchSampler(blocks, 10, window=3, streams=2, seed=7))
    assert len(streamed) == 20 and sorted(i for batch in streamed for i in batch) == list(range(200))
    worker_chunks = [{block_of[i] for batch in streamed[w:16:2] for i in batch} for w in (0, 1)]
    assert not worker_chunks[0] & worker_chunks[1]


def test_train_writes_checkpoints_and_metrics_then_is_up_to_date_or_extends(tmp_path):
    write_sta_stores(tmp_path, n_videos=5, n_frames=16, val_videos=1)
    summary = run_train(tmp_path, quick())
    folder = tmp_path / "checkpoints" / "sta"
    assert (summary.epochs_done, summary.steps, summary.train_samples, summary.val_samples) == (2, 16, 64, 16)
    assert summary.ok and not summary.up_to_date and np.isfinite(summary.train_loss)
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    vals = [line for line in lines if line["kind"] == "val"]
    assert [v["step"] for v in vals] == [8, 16]
    assert all(np.isfinite([v["cc"], v["nss"], v["kld"]]).all() and v["n"] == 16 for v in vals)
    assert [line["step"] for line in lines if line["kind"] == "train"] == list(range(2, 17, 2))
    best, last = load_checkpoint(folder / "best.pt"), load_checkpoint(folder / "last.pt")
    assert best["val"]["cc"] == pytest.approx(max(v["cc"] for v in vals))
    assert last["position"]["step"] == 16 and last["backbone"] == "tiny" and "optimizer" in last
    assert "optimizer" not in best and best["features_settings"]["size"] == 64

    again = run_train(tmp_path, quick())
    assert again.up_to_date and again.steps == 16 and "up to date" in again.line()
    longer = run_train(tmp_path, quick(epochs=3))
    assert (longer.resumed_from_step, longer.steps, longer.epochs_done) == (16, 24, 3)


def test_flow_input_and_own_switch_train(tmp_path):
    write_sta_stores(tmp_path, n_videos=3, n_frames=16, val_videos=1, no_audio=(0,))
    demo = preset_config("cpu", "train")
    config = quick(model=replace(demo.model, use_flow=True), teacher_forcing=False, max_steps=2)
    summary = run_train(tmp_path, config)
    assert summary.steps == 2 and np.isfinite(summary.train_loss)
    saved = load_checkpoint(tmp_path / "checkpoints" / "sta" / "last.pt")
    assert saved["model_settings"]["model"]["use_flow"] is True
    assert any(key.startswith("flow_encoder.") for key in saved["model"])


def test_resume_after_a_kill_gives_the_same_weights_bit_for_bit(tmp_path):
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    for ws in (uninterrupted, killed):
        write_sta_stores(ws, n_videos=6, n_frames=16, val_videos=1)
    reference = run_train(uninterrupted, quick())
    assert reference.steps == 20  # 2 epochs of 10 batches

    folder = killed / "checkpoints" / "sta"

    def crash(step: int) -> None:
        if step == 3:  # the periodic checkpoint of step 3 has just been written
            shutil.copy(folder / "last.pt", tmp_path / "step3.pt")
        if step == 5:
            raise RuntimeError("simulated kill")

    with pytest.raises(RuntimeError, match="simulated kill"):
        run_train(killed, quick(), step_hook=crash)
    assert load_checkpoint(folder / "last.pt")["position"]["step"] == 5  # an interrupt saves its position
    # A hard kill loses what came after the last periodic save: go back to step 3.
    shutil.copy(tmp_path / "step3.pt", folder / "last.pt")
    resumed = run_train(killed, quick())
    assert resumed.resumed_from_step == 3 and resumed.steps == 20
    expected = load_checkpoint(uninterrupted / "checkpoints" / "sta" / "last.pt")
    got = load_checkpoint(folder / "last.pt")
    assert expected["model"].keys() == got["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert got["position"] == expected["position"]


def test_no_pseudo_gt_frames_is_a_clear_error(tmp_path):
    write_sta_stores(tmp_path, n_videos=3, n_frames=8, gt_every=0)
    with pytest.raises(TrainError, match=r"no training frame has a pseudo-GT \(2 training video\(s\), 16 frames"):
        run_train(tmp_path, quick())


def test_missing_stores_and_incompatible_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(TrainError, match="no features store"):
        run_train(tmp_path, quick())
    write_sta_stores(tmp_path, n_videos=3, n_frames=16)
    run_train(tmp_path, quick(max_steps=1))
    last = tmp_path / "checkpoints" / "sta" / "last.pt"
    with pytest.raises(TrainError, match=r"last.pt: it was trained with backbone 'tiny', this run asks for "
                                         r"'efficientnet_lite0'.*--restart"):
        run_train(tmp_path, quick(backbone="efficientnet_lite0"))
    with pytest.raises(TrainError, match=r"last.pt: settings changed: input_size: 64 -> 96: .*--restart"):
        run_train(tmp_path, quick(input_size=96))
    with pytest.raises(TrainError, match=r"settings changed: lr: 0.002 -> 0.01"):
        run_train(tmp_path, quick(lr=0.01))
    saved = torch.load(last, weights_only=True)
    torch.save({**saved, "schema_version": 99}, last)
    with pytest.raises(TrainError, match="STA checkpoint schema 99, this avfix reads 2"):
        run_train(tmp_path, quick())
    restarted = run_train(tmp_path, quick(max_steps=1, lr=0.01), restart=True)
    assert restarted.steps == 1 and restarted.resumed_from_step is None


def _first_step_gradients(ws: Path, config: STATrainConfig) -> dict[str, torch.Tensor]:
    """(initial − trained) / lr after one plain SGD step = the gradient the step applied."""
    torch.manual_seed(config.seed)
    initial = build_sta(config.model_settings(), random_init=True).state_dict()
    trained = load_checkpoint(ws / "checkpoints" / "sta" / "last.pt")["model"]
    assert load_checkpoint(ws / "checkpoints" / "sta" / "last.pt")["position"]["step"] == 1
    return {k: (initial[k] - trained[k]) / config.lr for k in initial if initial[k].is_floating_point()}


def test_a_process_that_fails_under_torchrun_ends_the_job_at_once(tmp_path):
    """It does not wait for the others at a barrier (they wait in another collective): it leaves, and
    torchrun stops the job."""
    write_sta_stores(tmp_path, n_videos=5, n_frames=16, val_videos=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).with_name("failing_second_process_job.py")), "train", "--workspace", str(tmp_path),
               "--preset", "cpu", "--max-steps", "2", "--batch-size", "4", "-j", "0", "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "injected: the second process fails its first step" in done.stderr, done.stderr[-3000:]


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_combined_batch(tmp_path):
    options = ["--preset", "cpu", "--max-steps", "1", "--optimizer", "sgd", "--lr", "0.5", "--batchnorm", "frozen",
               "-j", "0", "--quiet", "--json"]  # fmt: skip
    ddp, single, half = tmp_path / "ddp", tmp_path / "single", tmp_path / "half"
    for ws in (ddp, single, half):
        write_sta_stores(ws, n_videos=5, n_frames=16, val_videos=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cli", "train", "--workspace", str(ddp), "--batch-size", "4", *options]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])  # printed once, by rank 0
    assert summary["world_size"] == 2 and summary["steps"] == 1 and summary["rank"] == 0

    def config(batch_size: int) -> STATrainConfig:
        return replace(preset_config("cpu", "train"), max_steps=1, batch_size=batch_size, optimizer="sgd", lr=0.5,
                       freeze_batchnorm=True, num_workers=0)  # fmt: skip

    run_train(single, config(8))
    run_train(half, config(4))
    got, expected, first_half = (_first_step_gradients(ws, config(4)) for ws in (ddp, single, half))
    assert max(float(g.abs().max()) for g in expected.values()) > 1e-3  # the step did something
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=2e-6, msg=name)
    # ...and the comparison can tell batches apart: the first process's share alone differs.
    assert any(not torch.allclose(first_half[name], expected[name], rtol=1e-3, atol=1e-5) for name in expected)


def test_ctrl_c_stops_cleanly_with_exit_130_and_the_rerun_resumes(tmp_path):
    write_sta_stores(tmp_path, n_videos=5, n_frames=16, val_videos=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cli", "train", "--workspace", str(tmp_path), "--preset", "cpu",
               "--epochs", "1000", "--batch-size", "4", "-j", "0", "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)  # fmt: skip
    metrics = tmp_path / "checkpoints" / "sta" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    assert "[interrupted: rerun to resume]" in out
    step = load_checkpoint(tmp_path / "checkpoints" / "sta" / "last.pt")["position"]["step"]
    assert step >= 10
    config = replace(preset_config("cpu", "train"), epochs=1000, batch_size=4, num_workers=0, max_steps=step + 2)
    resumed = run_train(tmp_path, config)
    assert resumed.resumed_from_step == step and resumed.steps == step + 2


class _RunsCode:
    """Unpickling this creates a file: what an unsafe loader would do with a planted checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_headers_are_read_with_the_safe_loader(tmp_path, monkeypatch):
    write_sta_stores(tmp_path, n_videos=3, n_frames=16)
    run_train(tmp_path, quick(max_steps=1))
    last = tmp_path / "checkpoints" / "sta" / "last.pt"
    header = read_header(last)
    assert header["position"]["step"] == 1 and header["settings"]["lr"] == quick().lr
    assert not {"model", "optimizer", "rng"} & set(header)  # the weights are not part of the header
    # Read from the pickle without torch (`avfix status`), it is exactly what torch reads.
    by_torch = torch.load(last, weights_only=True)
    assert header == {key: value for key, value in by_torch.items()
                      if key not in ("model", "optimizer", "scheduler", "scaler", "rng")}  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "_load", lambda *_: pytest.fail("torch read the header"))
        assert read_header(last) == header
    marker = tmp_path / "code-ran"
    torch.save({**torch.load(last, weights_only=True), "planted": _RunsCode(marker)}, last)
    with pytest.raises(TrainError, match="last.pt: not a readable PyTorch checkpoint"):
        read_header(last)
    assert not marker.exists()
