"""The fault-injection module reaches child processes and patches only on request (the crash / NaN / kill
tests themselves: test_parallel, test_deepspeed, test_training, data_prep/test_resume)."""

import os
import subprocess
import sys

import pytest

from tests.faults import fault_env
from tests.helpers import REPO


def _probe(code: str, env: dict) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("DYT_FAULTS", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_faults_patch_their_targets_in_a_child_process_on_import():
    code = ("import sys; assert 'pipeline.monitor' not in sys.modules; import pipeline.monitor as m, pipeline.engine "
            "as e; print(m.Monitor.step.__name__, e.build_engine.__name__)")
    assert _probe(code, fault_env(crash_after_step=5, nan_loss_at_step=2)) == ["crashing", "build_with_nan"]


def test_no_fault_requested_nothing_installed():
    code = "import sys; print('tests.faults' in sys.modules, *(type(f).__name__ for f in sys.meta_path))"
    installed, *finders = _probe(code, fault_env())
    assert installed == "False" and finders and "_PatchOnImport" not in finders


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="unknown fault"):
        fault_env(crash_at=3)
