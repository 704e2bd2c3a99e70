"""Corpora → SentencePiece tokenizer → megatron-core .bin/.idx shards + manifest.json.

    from data_prep import prepare
    manifest_path = prepare(cfg)  # cfg: data_prep.config.PrepareConfig

or `python -m data_prep --help`. Importing this package is cheap: megatron, SentencePiece, pyarrow
and datasets are imported when they are needed.
"""

from .build import prepare
from .errors import BadInputError, DataPrepError
from .manifest import FORMAT, TOOL_VERSION

__all__ = ["FORMAT", "TOOL_VERSION", "BadInputError", "DataPrepError", "prepare"]
