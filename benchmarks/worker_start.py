"""How long local dask worker processes take to start, spawned as fresh interpreters (dask's default)
against forked from avfix's preloaded server (`pipeline.common.scheduling.start_worker_server`), in the
same run.

Each measurement runs in a child process of its own, alternating the two ways, and times:
- start: the cluster of 2 worker processes, until both have run a task that uses the stage's module
  (what a stage's first segment needs), from before this process imports that module itself (as
  `avfix extract` starts the server before its own imports);
- restart: the nanny replacing both workers (`Client.restart`, as after a worker killed mid-run), until
  both have run such a task again (the median of 3).
Prints the medians of --rounds and the ratio spawned / forked. With `--server-had MODULE`, a third way:
forked from a server that imported MODULE and not the stage's module (as in `avfix run -j 2 --processes`
before its server imported every stage's modules: extract's alone, so that predict's workers each imported
their network code).

    .venv/bin/python benchmarks/worker_start.py                      # extract's module, --rounds 3
    .venv/bin/python benchmarks/worker_start.py --module pipeline.predict.segments --server-had pipeline.extract.run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESTARTS = 3
OTHER = "forked, server without the module"


def uses(module: str) -> bool:
    """A worker's task that needs `module`, as a stage's tasks do (imported unless already there)."""
    import importlib

    return importlib.import_module(module) is not None


def child(way: str, module: str, server_had: str | None) -> dict:
    import dask
    from distributed import Client, LocalCluster

    from pipeline.common.scheduling import SchedulerConfig, dask_client, local_cluster_config, start_worker_server

    began = time.perf_counter()
    if way.startswith("forked"):  # as `avfix extract --processes` does it
        start_worker_server((server_had if way == OTHER else module,))
        __import__(module)  # this process's own imports, as the stage's
        with dask_client(SchedulerConfig(workers=2, threads=False), worker_modules=(module,)) as client:
            return _measure(client, module, began)
    __import__(module)
    # dask's own way: each worker a fresh interpreter (avfix's cluster settings otherwise)
    with dask.config.set({**local_cluster_config(), "distributed.worker.multiprocessing-method": "spawn"}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          memory_limit=0) as cluster, Client(cluster) as client:  # fmt: skip
            return _measure(client, module, began)


def _measure(client, module: str, began: float) -> dict:  # noqa: ANN001
    client.wait_for_workers(2)
    assert all(client.run(uses, module).values())
    started = time.perf_counter() - began
    restarts = []
    for _ in range(RESTARTS):
        at = time.perf_counter()
        client.restart()
        client.wait_for_workers(2)
        assert all(client.run(uses, module).values())
        restarts.append(time.perf_counter() - at)
    return {"start": started, "restart": statistics.median(restarts)}


def run_child(way: str, module: str, server_had: str | None) -> dict:
    args = ["--child", way, "--module", module] + (["--server-had", server_had] if server_had else [])
    done = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", default="pipeline.extract.run", help="The stage's task module.")
    parser.add_argument("--server-had", default=None, metavar="MODULE",
                        help="Also: forked from a server that imported MODULE instead of the stage's module.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("spawned", "forked", OTHER), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.module, args.server_had)))
        return
    got: dict[str, list[dict]] = {"spawned": [], "forked": []} | ({OTHER: []} if args.server_had else {})
    for round_ in range(args.rounds):
        for way in got:
            r = run_child(way, args.module, args.server_had)
            got[way].append(r)
            print(f"round {round_ + 1}, {way}: start {r['start']:.2f} s, restart {r['restart']:.2f} s", flush=True)

    def median(way: str, key: str) -> float:
        return statistics.median(r[key] for r in got[way])

    print(f"\n2 local worker processes for {args.module}, medians of {args.rounds} rounds:")
    for key, what in (("start", "start, until both ran a task using it"), ("restart", "restart of both")):
        spawned, forked = median("spawned", key), median("forked", key)
        print(f"  {what}: spawned {spawned:.2f} s, forked from the server {forked:.2f} s -> "
              f"{spawned / forked:.1f}x")
        if args.server_had:
            other = median(OTHER, key)
            print(f"    forked from a server that imported {args.server_had} instead: {other:.2f} s -> "
                  f"{other / forked:.1f}x the server's with the stage's module")


if __name__ == "__main__":
    main()
