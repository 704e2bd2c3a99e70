"""Fixtures of the data_prep tests; the helpers are in tests/data_prep/helpers.py."""

from pathlib import Path

import pytest

from data_prep.config import TokenizerConfig
from tests.data_prep.helpers import make_texts


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory) -> Path:
    """A SentencePiece model trained once on generated text (for tests that are not about training)."""
    from data_prep.tokenizer import train

    path = tmp_path_factory.mktemp("tok") / "small.model"
    path.write_bytes(train(iter(make_texts(200, seed=99)), TokenizerConfig(vocab_size=600, num_threads=1)))
    return path
