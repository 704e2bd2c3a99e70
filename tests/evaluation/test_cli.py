"""The command line reports bad input in one line that names the problem, with a non-zero exit."""

import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("args, rc, message", [
    (["scurve", "no/such/run"], 2, "config error: no/such/run: not a run directory (no config.yaml)"),
    (["compare", "no_such_compare"], 2, "config error: compare config 'no_such_compare': no such file"),
    (["bench", "tiny_dyt", "--norms", "rmsnorm,batchnorm"], 2, "config error: --norms: unknown batchnorm"),
    (["bench", "tiny_dyt", "model.hidden_size=130"], 2, "config error: model.hidden_size: 130"),
])
def test_cli_errors(args, rc, message):
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluation", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
