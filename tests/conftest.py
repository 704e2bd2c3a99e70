import os
from pathlib import Path

import pytest
import torch

# Before any test module is collected: TRITON_INTERPRET must be set before `pipeline.kernels.dyt_triton`
# (the @triton.jit definitions) is first imported, by whichever test gets there first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def pydocs_manifest(tmp_path_factory) -> Path:
    """The bundled corpus prepared exactly as `make data CONFIG=tiny_dyt` does, into a temp dir."""
    from data_prep import prepare
    from pipeline.config import load_config

    out = tmp_path_factory.mktemp("pydocs")
    cfg = load_config("tiny_dyt", [f"data.prepare.output_dir={out}", f"data.manifest={out}/manifest.json"])
    return Path(prepare(cfg.data.prepare))
