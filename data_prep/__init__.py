"""Corpora → SentencePiece tokenizer → megatron-core .bin/.idx shards + manifest.json.

    from data_prep import prepare
    manifest_path = prepare(cfg)  # cfg: data_prep.config.PrepareConfig

or `python -m data_prep --help`. Importing this package (or `data_prep.config`, which `pipeline.config`
uses) loads nothing else: the names below are imported on first use, and megatron, SentencePiece,
pyarrow and datasets only when they are needed.
"""

import importlib

_LAZY = {"prepare": "build", "BadInputError": "errors", "DataPrepError": "errors", "FORMAT": "manifest",
         "TOOL_VERSION": "manifest"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
