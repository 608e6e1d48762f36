"""A classifier trained by the two processes of a torchrun job (gloo, CPU): an interrupted run resumes
to the same weights bit for bit, and with frozen BatchNorm it trains what one process trains, up to
the order of float sums. A process that is done leaves the job only when all are done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def test_two_processes_train_a_classifier_resumably_and_as_one_process_does(tmp_path):
    out = tmp_path / "results.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).with_name("ddp_classifier_job.py")), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = torch.load(out, weights_only=False)
    # The second process, done first, left the job only once the first had finished its work alone.
    assert float(out.with_suffix(".left").read_text()) >= results["leaving"]

    assert results["resume_line"] == "resumed: resuming after epoch 1"
    straight, resumed = results["straight"], results["resumed"]
    assert straight["steps"] == resumed["steps"] == 9  # 3 epochs of 3 global batches
    for key, value in straight["weights"].items():  # BatchNorm's statistics and dropout's masks included
        torch.testing.assert_close(resumed["weights"][key], value, rtol=0, atol=0, msg=key)

    together, alone = results["frozen_bn_together"], results["frozen_bn_alone"]
    assert together["val"] == alone["val"] and together["train"] == alone["train"]
    for key, value in alone["weights"].items():
        # The same batches, flips and mean loss; only the grouping of the sums differs.
        torch.testing.assert_close(together["weights"][key], value, rtol=1e-5, atol=1e-6, msg=key)
