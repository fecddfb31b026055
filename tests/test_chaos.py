"""A kill at a random moment costs only the work since the last marker or checkpoint: three
trials of bench/chaos.py (the dataprep driver, torchrun's agent, the launcher), each rerun to
the end and compared with an undisturbed run (the documented run is 50 trials: README). The
moments fall in the first half of the undisturbed run's duration, so that a slow machine still
sees every kill."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.slow


def test_three_kills_leave_results_identical_to_the_undisturbed_run(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--trials", "3", "--seed", "72",
                           "--quick", "--window", "0.5", "--work", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "CCP_SHARED_DATA": str(SHARED_DATA)})
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1] == "chaos: 3 of 3 trials identical to the undisturbed run", proc.stdout + proc.stderr
    killed = [l for l in lines if l.startswith("trial ")]
    assert len(killed) == 3 and all("killed" in l for l in killed), killed
    # The driver first: its Ray's agents, left to exit on their own, are checked while the others run.
    assert [l.split()[2].rstrip(":") for l in killed] == ["driver", "torchrun", "launcher"]
