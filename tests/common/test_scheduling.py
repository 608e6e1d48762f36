"""Local dask clusters (`pipeline.common.scheduling`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from pipeline.common.scheduling import LOCAL_CLUSTER_CONFIG, SchedulerConfig, dask_client

REPO = Path(__file__).resolve().parents[2]


def test_two_local_clusters_at_once_run_without_dasks_port_warning():
    # e.g. `avfix extract` on one workspace while `avfix predict` runs on another
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with dask_client(SchedulerConfig(workers=1)) as first, dask_client(SchedulerConfig(workers=1)) as second:
            assert first.submit(sum, [1, 2]).result() == 3
            assert second.submit(sum, [3, 4]).result() == 7
            assert first.scheduler_info()["address"] != second.scheduler_info()["address"]
    assert not [w for w in seen if "already in use" in str(w.message)], [str(w.message) for w in seen]


def test_local_clusters_keep_their_diagnostics_quiet():
    import dask

    with dask_client(SchedulerConfig(workers=1)) as client:
        assert client.submit(sum, [1, 1]).result() == 2
        assert dask.config.get("distributed.admin.system-monitor.interval") == "5s"
    assert LOCAL_CLUSTER_CONFIG["distributed.worker.profile.enabled"] is False


WORKER_SERVER = """
import json, os, sys
if __name__ == "__main__":
    before = dict(os.environ)
    from pipeline.common.scheduling import SchedulerConfig, dask_client, start_worker_server
    started = start_worker_server(["pipeline.common.read_ahead"])
    unchanged = dict(os.environ) == before

    def seen():
        return [os.getppid(), "pipeline.common.read_ahead" in sys.modules, os.environ.get("MALLOC_ARENA_MAX")]

    # The server is running: this call's modules change nothing.
    with dask_client(SchedulerConfig(workers=2, threads=False), worker_modules=["json"]) as client:
        first = list(client.run(seen).values())
        client.restart()  # as the nanny replaces a killed worker
        again = list(client.run(seen).values())
    print(json.dumps({"main": os.getpid(), "started": started, "unchanged": unchanged, "first": first,
                      "again": again}))
"""


def test_local_worker_processes_fork_from_one_server_that_imported_their_modules():
    from pipeline.common.allocator import ENVIRON

    clean = {k: v for k, v in os.environ.items() if k not in ENVIRON}
    done = subprocess.run([sys.executable, "-c", WORKER_SERVER], cwd=REPO, env=clean, capture_output=True,
                          text=True, check=True, timeout=300)  # fmt: skip
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["started"] and got["unchanged"]  # this process's environment is left as it was
    assert len(got["first"]) == 2 and len(got["again"]) == 2
    servers = {parent for parent, _, _ in got["first"] + got["again"]}
    assert len(servers) == 1 and got["main"] not in servers  # one server forked every worker, restarts too
    # What it imported, every worker has without importing it; and a local worker's malloc settings.
    assert all(preloaded and arenas == ENVIRON["MALLOC_ARENA_MAX"] for _, preloaded, arenas in got["first"] + got["again"])
