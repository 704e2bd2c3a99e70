"""`pip install .` (and `-e .`) in a fresh venv: the console scripts run and find the shipped configs, from
any directory.

The venv sees the shared test venv's packages through a .pth file (so nothing is downloaded); the project
itself is installed from a copy of the source with `--no-deps`, and run from outside the source tree (which,
for a wheel install, is deleted first).
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import REPO

SHIPPED = ["pipeline", "data_prep", "launch", "configs", "requirements", "pyproject.toml", "setup.py",
           "MANIFEST.in", "README.md"]


def _run(cmd: list, cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_pip_install_runs_console_scripts_with_shipped_configs(tmp_path, editable):
    src = tmp_path / "src"
    for name in SHIPPED:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / name).is_dir() else {}))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    (purelib / "shared_test_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DYT_CONFIG_PATH")}
    py, bin_ = venv / "bin" / "python", venv / "bin"
    _run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          *(["-e"] if editable else []), src], tmp_path, env)
    if not editable:
        shutil.rmtree(src)  # nothing may come from the source tree any more

    where = _run([py, "-c", "import pipeline; from pipeline.config.loader import SHIPPED_CONFIGS as c; "
                  "print(pipeline.__file__); print(c)"], tmp_path, env).split()
    assert all(Path(p).is_relative_to(src if editable else purelib) for p in where), where
    assert (Path(where[1]) / "tiny_dyt.yaml").is_file() and (Path(where[1]) / "compare" / "tiny.yaml").is_file()

    assert "--config-dir" in _run([bin_ / "dyt-pretrain", "--help"], tmp_path, env)
    for script in ("dyt-data", "dyt-eval", "dyt-export"):
        assert "usage:" in _run([bin_ / script, "--help"], tmp_path, env)
    out = _run([bin_ / "dyt-pretrain", "tiny_dyt", "train.steps=50", "--dry-run"], tmp_path, env)
    assert "-m pipeline.train --config runs/tiny_dyt/config.yaml" in out

    # A user's config dir: its names, and `defaults` that reach into the shipped configs.
    mine = tmp_path / "my_configs"
    mine.mkdir()
    (mine / "my_run.yaml").write_text("defaults: [tiny_rmsnorm]\nname: mine\n")
    out = _run([bin_ / "dyt-pretrain", "my_run", "--config-dir", mine, "--dry-run"], tmp_path, env)
    assert "--config runs/mine/config.yaml" in out
