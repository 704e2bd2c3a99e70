"""Imports follow the data flow: data_prep (upstream) loads neither pipeline nor launch, and reading a run
config (`pipeline.config`, which uses data_prep.config) loads none of data_prep's machinery."""

import json
import subprocess
import sys

from tests.helpers import REPO

DATA_PREP = REPO / "data_prep"
DOWNSTREAM = ("pipeline", "launch")


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_no_data_prep_module_loads_pipeline_or_launch():
    """At run time too (tests/test_imports.py reads the import statements): every module imported."""
    modules = [f"data_prep.{f.stem}" for f in sorted(DATA_PREP.glob("*.py")) if f.stem != "__init__"]
    assert len(modules) > 15
    loaded = _fresh(f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
                    "print(json.dumps(sorted(sys.modules)))")
    assert not [m for m in loaded if m.split(".")[0] in DOWNSTREAM]


def test_reading_a_run_config_loads_no_data_prep_machinery():
    loaded = _fresh("import json, sys\nfrom pipeline.config import load_config\nload_config('tiny_dyt')\n"
                    "print(json.dumps(sorted(sys.modules)))")
    assert [m for m in loaded if m.startswith("data_prep")] == ["data_prep", "data_prep.config"]
    heavy = {"tqdm", "zstandard", "torch", "megatron", "sentencepiece", "numpy", "pyarrow", "datasets"}
    assert not heavy & {m.split(".")[0] for m in loaded}
