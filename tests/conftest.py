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


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory) -> Path:
    """A SentencePiece model trained once on generated text (for tests that are not about training)."""
    from data_prep.config import TokenizerConfig
    from data_prep.tokenizer import train
    from tests.data_prep.helpers import make_texts

    path = tmp_path_factory.mktemp("tok") / "small.model"
    path.write_bytes(train(iter(make_texts(200, seed=99)), TokenizerConfig(vocab_size=600, num_threads=1)))
    return path
