"""Leaving a torchrun job (`Distributed` as a context manager): a process that finished waits for the
others first, one that failed leaves at once, and a process group avfix did not create is left alone.
The real two-process behaviour is tested under torchrun in tests/pseudolabel/test_classifier_ddp.py."""

from __future__ import annotations

import pytest

from pipeline.common import processes
from pipeline.common.processes import Distributed


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(processes.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(processes.dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(processes.dist, "destroy_process_group", lambda: seen.append("destroy"))
    return seen


def test_a_process_that_finished_waits_for_the_others_before_leaving(calls):
    with Distributed(rank=1, world_size=2, owns_group=True):
        calls.append("work")
    assert calls == ["work", "barrier", "destroy"]


def test_a_process_that_failed_leaves_at_once(calls):
    with pytest.raises(ValueError, match="a damaged chunk"):
        with Distributed(rank=1, world_size=2, owns_group=True):
            raise ValueError("a damaged chunk")
    assert calls == ["destroy"]  # a barrier could wait for hours: the others may be in another collective


def test_a_group_created_elsewhere_is_left_alone(calls):
    with Distributed(rank=0, world_size=2, owns_group=False):
        pass
    assert calls == []
