"""Local dask clusters (`pipeline.common.scheduling`)."""

from __future__ import annotations

import warnings

from pipeline.common.scheduling import LOCAL_CLUSTER_CONFIG, SchedulerConfig, dask_client


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
