"""How long `avfix --help` and `avfix status` take to answer, against importing torch, in the same run.

Makes a small workspace with this checkout's command line (`avfix synth`: 2 classes x 2 videos of 1.2 s at
64 px; `avfix run --preset cpu` at tiny sizes: every stage, so status reads stores and checkpoints too;
`--quick`: extract only), then times each command in a fresh interpreter, as a user runs it:
- `python -c pass`: the interpreter alone (the floor),
- `python -c "import torch"`: the baseline, what every command paid before it did anything,
- `avfix --help`, `avfix status --workspace WS`.
Prints the median and the fastest of --rounds runs and each median as a fraction of the baseline's.

    .venv/bin/python benchmarks/startup.py                 # --quick, --rounds 7
    .venv/bin/python benchmarks/startup.py --repo OTHER    # time another checkout's cli (e.g. before a change)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ("extract.size=64", "pseudolabel.coarse_size=64", "pseudolabel.fine_size=64", "pseudolabel.map_size=32",
        "pseudolabel.train.epochs=1", "train.epochs=1", "train.batch_size=4", "run.torch_threads=1")  # fmt: skip


def avfix(*args: str) -> list[str]:
    """The command line; run with a checkout as working directory, that checkout's cli and pipeline answer
    (the working directory comes first on `python -m`'s path), not an installed avfix."""
    return [sys.executable, "-m", "cli", *args]


def make_workspace(root: Path, quick: bool) -> Path:
    videos, ws = root / "videos", root / "ws"
    for command in (
        avfix("synth", str(videos), "--classes", "2", "--videos-per-class", "2", "--seconds", "1.2",
              "--width", "64", "--height", "64", "--quiet"),
        avfix("run", str(videos), "--workspace", str(ws), "--preset", "cpu", "--quiet",
              *(["--until", "extract"] if quick else []), *(arg for s in TINY for arg in ("--set", s))),
    ):  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return ws


def wall_times(command: list[str], cwd: Path, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="Extract only (no training) for the workspace.")
    parser.add_argument("--repo", type=Path, default=ROOT, help="Checkout whose cli is timed.  [default: this one]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avfix-startup-") as work:
        began = time.perf_counter()
        ws = make_workspace(Path(work), args.quick)
        print(f"workspace ({'extracted' if args.quick else 'every stage run'}) made in {time.perf_counter() - began:.0f} s;"
              f" timing {args.repo}, {args.rounds} rounds each")  # fmt: skip
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "avfix --help": avfix("--help"),
            "avfix status --workspace WS": avfix("status", "--workspace", str(ws)),
        }
        # Interleaved rounds, so a burst of load elsewhere on the machine hits every command alike.
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name] += wall_times(command, args.repo, 1)
        baseline = statistics.median(times['python -c "import torch"'])
        for name, found in times.items():
            median = statistics.median(found)
            print(f"  {name:<30} median {median:5.2f} s  fastest {min(found):5.2f} s  {median / baseline:5.2f}x import torch")


if __name__ == "__main__":
    main()
