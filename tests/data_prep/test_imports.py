"""Imports follow the data flow: data_prep (upstream) never imports pipeline or launch, and reading a run
config (`pipeline.config`, which uses data_prep.config) loads none of data_prep's machinery."""

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

DATA_PREP = REPO / "data_prep"
DOWNSTREAM = ("pipeline", "launch")


def _imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of the file (function bodies too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_data_prep_never_imports_downstream():
    files = sorted(DATA_PREP.rglob("*.py"))
    assert len(files) > 15
    offenders = {str(f.relative_to(REPO)): sorted(_imported(f) & set(DOWNSTREAM)) for f in files}
    assert not {f: n for f, n in offenders.items() if n}, "data_prep must not import pipeline/launch"
    # ... and at run time, every module of it imported: still nothing downstream.
    modules = [f"data_prep.{f.stem}" for f in files if f.stem != "__init__"]
    loaded = _fresh(f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
                    "print(json.dumps(sorted(sys.modules)))")
    assert not [m for m in loaded if m.split(".")[0] in DOWNSTREAM]


def test_reading_a_run_config_loads_no_data_prep_machinery():
    loaded = _fresh("import json, sys\nfrom pipeline.config import load_config\nload_config('tiny_dyt')\n"
                    "print(json.dumps(sorted(sys.modules)))")
    assert [m for m in loaded if m.startswith("data_prep")] == ["data_prep", "data_prep.config"]
    heavy = {"tqdm", "zstandard", "torch", "megatron", "sentencepiece", "numpy", "pyarrow", "datasets"}
    assert not heavy & {m.split(".")[0] for m in loaded}
