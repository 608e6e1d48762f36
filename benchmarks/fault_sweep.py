"""A wider sweep than the tests: every stage stopped by SIGKILL and SIGINT at many writes, rerun, and
compared with an uninterrupted run, array by array and attribute by attribute; prints the table.

For each stage and each kind of write it reaches (`stores.faults`: chunk, attrs, file) the stage is first
run once to count its writes, then stopped at `--points` evenly spread writes of that kind with each
signal. A stop that did not stop (the command had already finished its work, e.g. SIGINT in its last
write) is counted apart.

    .venv/bin/python benchmarks/fault_sweep.py            # --points 3 for a quicker sweep, --stages predict
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import first_run_overrides, interruptible, make_sets  # noqa: E402

from pipeline.workspace.config import Overrides, load_config, write_config  # noqa: E402
from pipeline.workspace.dag import run_stage  # noqa: E402
from pipeline.workspace.registry import NAMES  # noqa: E402
from stores import faults  # noqa: E402
from stores.compare import checkpoint_differences, store_differences  # noqa: E402

POINTS = ("chunk", "attrs", "file")


def command(name: str, root: Path) -> list[str]:
    inputs = {"extract": [str(root / "train")], "predict": [str(root / "test")],
              "evaluate": [str(root / "test" / "truth.csv")]}  # fmt: skip
    return [sys.executable, "-m", "cli", name, *inputs.get(name, []), "--workspace", str(root / "ws"), "--quiet"]


def differences(name: str, got: Path, expected: Path) -> list[str]:
    stores = {"extract": ["features.zarr"], "pseudolabel": ["pseudo.zarr"],
              "predict": ["predictions.zarr", "predict-features.zarr"]}  # fmt: skip
    found = [d for store in stores.get(name, []) for d in store_differences(got / store, expected / store)]
    folder = {"pseudolabel": "checkpoints/pseudolabel", "train": "checkpoints/sta"}.get(name)
    if folder:
        for path in sorted((expected / folder).glob("*.pt")):
            found += checkpoint_differences(got / folder / path.name, path)
    if name == "evaluate":
        import json

        reports = [json.loads((ws / "report.json").read_text()) for ws in (got, expected)]
        keep = [{k: v for k, v in r.items() if k not in ("created", "seconds")} for r in reports]
        found += [] if keep[0] == keep[1] else ["report.json differs"]
    return found


def restore(live: Path, snapshot: Path) -> None:
    shutil.rmtree(live)
    shutil.copytree(snapshot, live)


def count_writes(name: str, live: Path, before: Path) -> Counter:
    """How many writes of each kind the stage makes (a run with the counting plan, then discarded)."""
    counts: Counter = Counter()
    for point in POINTS:
        restore(live, before)
        env = {**os.environ, faults.ENV: f"KILL:{point}:1000000", "OMP_NUM_THREADS": "1"}
        probe = subprocess.run([sys.executable, "-c", (
            "import runpy, sys, atexit\n"
            "from stores import faults\n"
            f"atexit.register(lambda: print('WRITES', faults._counts.get({point!r}, 0), file=sys.stderr))\n"
            f"sys.argv = {command(name, live)[2:]!r}\n"
            "runpy.run_module('cli', run_name='__main__')"
        )], cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
        line = next((entry for entry in probe.stderr.splitlines() if entry.startswith("WRITES ")), "WRITES 0")
        counts[point] = int(line.split()[1])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6, help="Writes to stop at, per stage, kind and signal.")
    parser.add_argument("--stages", nargs="+", choices=NAMES, default=list(NAMES), help="Stages to sweep.")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="avfix-faults-"))
    live = base / "root"
    train, test = make_sets(live)
    loaded = load_config(live / "ws", first_run_overrides(train, test, "train.checkpoint_every=1"))
    write_config(loaded.path, loaded.config)
    snapshots = {"": base / "before"}
    shutil.copytree(live, snapshots[""])
    for name in NAMES:
        assert run_stage(name, live / "ws", Overrides(), progress=False).ok
        snapshots[name] = base / f"after-{name}"
        shutil.copytree(live, snapshots[name])
    rows = []
    for index, name in enumerate(NAMES):
        if name not in args.stages:
            continue
        before = snapshots[NAMES[index - 1]] if index else snapshots[""]
        writes = count_writes(name, live, before)
        for point in POINTS:
            n = writes[point]
            if n == 0:
                continue
            chosen = sorted({max(1, round(n * (k + 1) / (args.points + 1))) for k in range(args.points)})
            for sig in ("KILL", "INT"):
                stopped = equal = finished = 0
                for at in chosen:
                    restore(live, before)
                    env = {**os.environ, faults.ENV: f"{sig}:{point}:{at}", "OMP_NUM_THREADS": "1"}
                    code = subprocess.run(command(name, live), cwd=REPO, env=env, capture_output=True,
                                          preexec_fn=interruptible).returncode  # fmt: skip
                    if code == 0:
                        finished += 1  # the stop came after the work was done (e.g. SIGINT in the last write)
                    elif code not in (-signal.SIGKILL, 130):
                        raise SystemExit(f"{name} {sig}:{point}:{at}: exit code {code}")
                    else:
                        stopped += 1
                    summary = run_stage(name, live / "ws", Overrides(), progress=False)
                    found = differences(name, live / "ws", snapshots[name] / "ws") if summary.ok else ["rerun failed"]
                    equal += not found
                    if found:
                        print(f"  {name} {sig}:{point}:{at}: {found[:3]}", flush=True)
                rows.append((name, point, n, sig, len(chosen), stopped, finished, equal))
                print(f"{name:<12} {point:<6} {n:>6} writes  {sig:<4} {len(chosen)} points: {stopped} stopped, "
                      f"{finished} finished first, {equal} equal to the uninterrupted run", flush=True)  # fmt: skip
    total = sum(r[4] for r in rows)
    print(f"\n{total} injection points; {sum(r[7] for r in rows)} ended equal to the uninterrupted run")
    shutil.rmtree(base)


if __name__ == "__main__":
    main()
