"""Pseudolabel's classifier training on 2 processes (torchrun, gloo, one torch thread each) against 1: the
fine-tuned `paper` S_coarse classifier (EfficientNet-Lite0 at 256 px, global batch 16), seconds per
global batch, the speed-up, and how far the two runs' weights lie apart (frozen BatchNorm, so both
train the same classifier up to the order of float sums).

    .venv/bin/python benchmarks/classifier_ddp.py [--batches 8] [--size 256] [--rounds 2]

The samples are random frames held in memory (no store reads), so the figure is the training step's:
forward, backward, the gradient all-reduce and the optimizer. Rounds alternate one process and two so
that other load on the machine falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(out: Path, batches: int, size: int) -> None:
    """One training run (alone, or as one process of a torchrun job); the first process writes its
    seconds per batch and weights to `out`."""
    sys.path.insert(0, str(REPO))
    import torch

    from models.classifiers import Branch, Stage
    from pipeline.common.processes import Distributed
    from pipeline.pseudolabel.classifier_loop import TrainConfig, train_classifier
    from pipeline.pseudolabel.training import ClassifierForward, build_classifier
    from pipeline.workspace.presets import preset_config

    torch.set_num_threads(1)
    processes = Distributed.from_env("cpu")
    config = preset_config("paper", "pseudolabel")
    n_items, classes = 16 * batches, 4
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (n_items, size, size, 3), dtype=torch.uint8, generator=generator)

    class Frames(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n_items

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"frames": frames[i], "label": torch.tensor(i % classes), "index": torch.tensor(i)}

    model = build_classifier(config, Branch.S, Stage.COARSE, classes)
    forward = ClassifierForward(Branch.S, size, False, {True: torch.zeros(1), False: torch.zeros(1)},
                                {True: None, False: None})  # fmt: skip
    train = TrainConfig(epochs=1, batch_size=16, freeze_batchnorm=True)
    with tempfile.TemporaryDirectory() as folder:
        empty = torch.utils.data.Subset(Frames(), [])
        rates: list[float] = []  # seconds per batch, timed by the loop after its warm-up batches
        train_classifier("S_coarse", model, Frames(), empty, forward, train, Path(folder) / f"r{processes.rank}.pt",
                         "bench", torch.device("cpu"), processes=processes,
                         on_rate=lambda rate, left: rates.append(rate))  # fmt: skip
    if processes.is_main:
        torch.save({"seconds_per_batch": rates[0], "weights": model.state_dict()}, out)
    processes.close()


def run(processes: int, out: Path, batches: int, size: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    me = [str(Path(__file__).resolve()), "--worker", str(out), "--batches", str(batches), "--size", str(size)]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    launcher = launcher if processes > 1 else []
    subprocess.run([sys.executable, *launcher, *me], cwd=REPO, env=env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8)  # the loop times batches 3-7
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.batches, args.size)
        return
    import torch

    seconds: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        weights = {}
        for _ in range(args.rounds):
            for processes in (1, 2):
                out = Path(folder) / f"{processes}.pt"
                run(processes, out, args.batches, args.size)
                result = torch.load(out, weights_only=False)
                seconds[processes].append(result["seconds_per_batch"])
                weights[processes] = result["weights"]
    apart = max(float((weights[1][k].float() - weights[2][k].float()).abs().max()) for k in weights[1])
    best = {p: min(values) for p, values in seconds.items()}
    print(json.dumps({"seconds_per_batch": seconds, "speed_up": best[1] / best[2], "max_weight_difference": apart}))
    print(f"S_coarse fine-tuned at {args.size} px, global batch 16: 1 process {best[1]:.2f} s/batch, "
          f"2 processes {best[2]:.2f} s/batch = {best[1] / best[2]:.2f}x (best of {args.rounds}); "
          f"weights apart by at most {apart:.2e}")


if __name__ == "__main__":
    main()
