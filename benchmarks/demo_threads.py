"""How many torch CPU threads should the demo use? The demo's two costly stages, timed per thread count.

    .venv/bin/python benchmarks/demo_threads.py [--preset fast|cpu] [--threads 1 2] [--rounds 2]
                                                [--workdir /tmp/avfix-threads]

Generates a small demo-like set (`avfix synth`), extracts it once, then times the pseudolabel stage
and the train stage of a preset (`fast`, the demo's, by default; a few epochs) from the same features
for each thread count, alternating the counts round by round so that other load on the machine falls
on all of them. Every run starts from the features alone (the frozen backbone's caches included).
Prints wall and CPU seconds per stage and the wall-time ratio against the first thread count.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.common.scheduling import SchedulerConfig
from pipeline.extract.config import ExtractConfig
from pipeline.extract.run import run_extract
from pipeline.pseudolabel.run import run_pseudolabel
from pipeline.synth.generate import SynthConfig, generate
from pipeline.train.run import run_train
from pipeline.workspace.presets import preset_config


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[..., object], *args: object) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    work(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("fast", "cpu"), default="fast")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--videos-per-class", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--epochs", type=int, default=2, help="Epochs of each classifier and of the STA network.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/avfix-threads"))
    args = parser.parse_args()

    videos, extracted = args.workdir / "videos", args.workdir / "extracted"
    generate(videos, SynthConfig(classes=args.classes, videos_per_class=args.videos_per_class, seconds=args.seconds))
    run_extract(videos, extracted, ExtractConfig(size=128), SchedulerConfig(workers=1))
    pseudolabel = preset_config(args.preset, "pseudolabel")
    pseudolabel = replace(pseudolabel, train=replace(pseudolabel.train, epochs=args.epochs))
    train = replace(preset_config(args.preset, "train"), epochs=args.epochs)
    times: dict[int, dict[str, list[tuple[float, float]]]] = {n: {"pseudolabel": [], "train": []} for n in args.threads}
    for round_ in range(args.rounds):
        order = args.threads if round_ % 2 == 0 else list(reversed(args.threads))
        for n in order:
            ws = args.workdir / f"ws-{n}"
            shutil.rmtree(ws, ignore_errors=True)
            shutil.copytree(extracted, ws)
            torch.set_num_threads(n)  # train's; pseudolabel sets its own from its config
            times[n]["pseudolabel"].append(timed(run_pseudolabel, ws, replace(pseudolabel, threads=n)))
            times[n]["train"].append(timed(run_train, ws, train))
            print(f"round {round_ + 1}, {n} thread(s): pseudolabel {times[n]['pseudolabel'][-1][0]:.1f} s, "
                  f"train {times[n]['train'][-1][0]:.1f} s", flush=True)  # fmt: skip

    base = args.threads[0]
    print(f"\n{args.preset} preset, {args.classes * args.videos_per_class} videos of {args.seconds:g} s, {args.epochs} epochs, "
          f"best of {args.rounds} rounds (wall / CPU seconds)\n")
    print("| threads | pseudolabel wall | pseudolabel CPU | train wall | train CPU | wall vs 1st |")
    print("|---|---|---|---|---|---|")
    best = {n: {stage: min(runs) for stage, runs in by_stage.items()} for n, by_stage in times.items()}
    base_wall = best[base]["pseudolabel"][0] + best[base]["train"][0]
    for n in args.threads:
        (pl_wall, pl_cpu), (tr_wall, tr_cpu) = best[n]["pseudolabel"], best[n]["train"]
        print(f"| {n} | {pl_wall:.1f} | {pl_cpu:.1f} | {tr_wall:.1f} | {tr_cpu:.1f} | "
              f"{(pl_wall + tr_wall) / base_wall:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
