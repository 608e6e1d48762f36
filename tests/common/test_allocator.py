"""glibc malloc settings (`pipeline.common.allocator`): with them a large block freed and allocated again
comes back from the heap without page faults; without them every allocation faults its pages in anew."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.common.allocator import ENVIRON

REPO = Path(__file__).resolve().parents[2]
# Faults of 10 allocations of a 200 MB block (49k pages each) in a fresh process, after 10 others (the
# heap grows to its working size in the first few).
FAULTS = """
import resource, sys
from pipeline.common.allocator import tune_allocator
print(tune_allocator() if sys.argv[1] == "tuned" else "untuned")
import torch  # as a forward pass allocates (numpy asks for huge pages, which hide the cost)
torch.set_num_threads(1)
for _ in range(10):
    torch.ones(50_000_000).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(50_000_000).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRON}
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=REPO, env={**clean, **env}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    answer, count = done.stdout.split()
    return answer, int(count)


def test_large_blocks_stay_on_the_heap_once_tuned():
    answer, tuned = faults("tuned")
    assert answer == "True"
    assert tuned < 10 * 1000, tuned  # the block is reused: a few pages per allocation at most
    _, untuned = faults("untuned")
    assert untuned > 10 * 40_000, untuned  # glibc's default: mmap, munmap, every page faulted again


def test_the_users_own_malloc_settings_are_left_alone():
    answer, count = faults("tuned", MALLOC_ARENA_MAX="2")
    assert answer == "False" and count > 10 * 40_000


CLUSTER_ENVIRON = """
import json, os, sys
if __name__ == "__main__":
    if sys.argv[1] == "after-a-cluster":  # anyone's local cluster of worker processes, in this process
        from distributed import LocalCluster
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"):
            pass
    from pipeline.common.scheduling import local_cluster_config
    environ = local_cluster_config()["distributed.nanny.pre-spawn-environ"]
    print(json.dumps([os.environ.get("MALLOC_TRIM_THRESHOLD_"), {k: environ[k] for k in environ if "MALLOC" in k}]))
"""


def cluster_environ(mode: str, **env: str) -> tuple[str | None, dict[str, str]]:
    """(this process's MALLOC_TRIM_THRESHOLD_ in os.environ, the malloc variables its local workers get)."""
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRON}
    done = subprocess.run([sys.executable, "-c", CLUSTER_ENVIRON, mode], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    ours, environ = json.loads(done.stdout.splitlines()[-1])
    return ours, environ


def test_what_a_dask_nanny_wrote_into_this_process_is_not_taken_for_the_users_settings():
    polluted, environ = cluster_environ("after-a-cluster")
    assert polluted == "65536"  # dask wrote its workers' variables into this process's os.environ
    assert environ == ENVIRON


def test_the_users_own_variables_reach_the_workers_whatever_ran_before():
    mine = {"MALLOC_TRIM_THRESHOLD_": "12345"}
    for mode in ("after-a-cluster", "fresh"):
        _, environ = cluster_environ(mode, **mine)
        assert environ == {**ENVIRON, **mine}, mode


def test_local_dask_workers_start_with_the_settings_over_dasks_own():
    import distributed  # noqa: F401  (dask's defaults for its workers come with it)

    from pipeline.common.scheduling import local_cluster_config

    environ = local_cluster_config()["distributed.nanny.pre-spawn-environ"]
    assert {k: environ[k] for k in ENVIRON} == ENVIRON  # dask's MALLOC_TRIM_THRESHOLD_ of 64 KiB replaced
    assert environ["OMP_NUM_THREADS"] == 1


RELEASE = """
from pipeline.common.allocator import release_free_memory, tune_allocator
import torch
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6
tune_allocator()
block = torch.ones(50_000_000)  # 200 MB, on the heap once tuned
del block
kept = resident_mb()
print(release_free_memory(), kept - resident_mb())
"""


def test_free_heap_pages_go_back_to_the_system_after_a_job():
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRON}
    done = subprocess.run([sys.executable, "-c", RELEASE], cwd=REPO, env=clean, capture_output=True, text=True,
                          check=True)  # fmt: skip
    released, freed_mb = done.stdout.split()
    assert released == "True"
    assert 150 < float(freed_mb) < 260, freed_mb  # the freed 200 MB block stayed resident until the trim


TRAINING = """
from pipeline.common.allocator import training_heap, tune_allocator
import torch
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6
def released_when_freed():
    block = torch.ones(50_000_000)  # 200 MB
    held = resident_mb()
    del block
    return held - resident_mb()
tune_allocator()
with training_heap():
    inside = released_when_freed()
print(inside, released_when_freed())
"""


def test_training_keeps_glibcs_thresholds_and_the_settings_come_back_after_it():
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRON}
    done = subprocess.run([sys.executable, "-c", TRAINING], cwd=REPO, env=clean, capture_output=True, text=True,
                          check=True)  # fmt: skip
    inside, after = (float(mb) for mb in done.stdout.split())
    assert 150 < inside < 260, inside  # mapped apart and unmapped when freed, as glibc does by default
    assert abs(after) < 20, after  # on the heap again: the freed block stays for the next batch
