"""A source of existing megatron .bin/.idx shards: listed in the manifest where they are (nothing is
copied), after checks that they fit the tokenizer:

- dtype: the one megatron's preprocess_data.py picks for this vocabulary (uint16 below 65,500 ids,
  else int32); another dtype means another tokenizer made them;
- the index agrees with the .bin size (a truncated copy fails here);
- on a sample of documents: every id is below the vocabulary size, and decoding then encoding again
  gives the same ids (it does for text the same SentencePiece model encoded; another model's ids
  decode to text it would cut differently).
"""

import os

import numpy

from .errors import DataPrepError
from .inputs import megatron_prefixes
from .megatron_io import indexed_dataset, no_rank_warning
from .tokenizer import TokenizerInfo

SAMPLE_DOCS = 32  # documents checked per shard, spread over it
SAMPLE_TOKENS = 2048  # at most this many ids of each, from its start
MIN_ROUNDTRIP = 0.9  # share of sampled documents that must decode and encode back to the same ids


def _roundtrip(sp, ids: list[int], tok: TokenizerInfo, truncated: bool) -> bool:
    """decode then encode gives `ids` back (of a truncated document: all but its last, maybe cut, words)."""
    if ids and ids[0] == tok.bos_id:
        ids = ids[1:]
    if ids and ids[-1] == tok.eod_id and not truncated:
        ids = ids[:-1]
    keep = len(ids) - 16 if truncated else len(ids)
    return sp.encode(sp.decode(ids))[:keep] == ids[:keep]


def check_shard(prefix: str, key: str, tok: TokenizerInfo, dtype: str, sp) -> dict:
    """The shard's manifest entry (documents, tokens, bytes), or a DataPrepError naming `key`."""
    with no_rank_warning():
        try:
            ds = indexed_dataset().IndexedDataset(prefix)
        except (OSError, ValueError, AssertionError) as e:
            raise DataPrepError(f"{key}: {prefix}: not a megatron indexed dataset ({e})") from None
    index = ds.index
    if index.dtype.__name__ != dtype:
        raise DataPrepError(f"{key}: {prefix} holds {index.dtype.__name__} ids, but the tokenizer's "
                            f"{tok.vocab_size} ids are {dtype} (megatron's choice): were these shards made "
                            "with another tokenizer?")
    lengths = index.sequence_lengths
    n_docs = len(index.document_indices) - 1
    itemsize = numpy.dtype(dtype).itemsize
    expected = int(index.sequence_pointers[-1]) + int(lengths[-1]) * itemsize if len(lengths) else 0
    actual = os.path.getsize(prefix + ".bin")
    if actual != expected:
        raise DataPrepError(f"{key}: {prefix}.bin has {actual} bytes, its index expects {expected} "
                            "(a truncated or mismatched copy?)")
    picks = sorted({i * n_docs // SAMPLE_DOCS for i in range(SAMPLE_DOCS)}) if n_docs else []
    good = 0
    for d in picks:
        first, last = int(index.document_indices[d]), int(index.document_indices[d + 1])
        ids = numpy.concatenate([ds[s][:SAMPLE_TOKENS] for s in range(first, last)])[:SAMPLE_TOKENS].tolist()
        truncated = int(lengths[first:last].sum()) > SAMPLE_TOKENS
        if ids and max(ids) >= tok.vocab_size:
            raise DataPrepError(f"{key}: {prefix} document {d} holds id {max(ids)}, but the tokenizer has "
                                f"{tok.vocab_size} ids: these shards were made with another tokenizer")
        good += _roundtrip(sp, ids, tok, truncated)
    if picks and good < MIN_ROUNDTRIP * len(picks):
        raise DataPrepError(f"{key}: {prefix}: {len(picks) - good} of {len(picks)} sampled documents do not "
                            f"decode and encode back to the same ids with {tok.path}: were these shards "
                            "made with another tokenizer?")
    return {"prefix": prefix, "documents": n_docs, "tokens": int(lengths.sum()), "bytes": actual,
            "external": True}


def external_shards(src, key: str, tok: TokenizerInfo, dtype: str) -> dict[str, list[dict]]:
    """split -> checked manifest entries of a megatron source's shards (absolute paths: the manifest
    points at them where they are)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tok.path)
    return {split: [check_shard(os.path.abspath(p), f"{key}.megatron", tok, dtype, sp) | {"source": src.name}
                    for p in prefixes] for split, prefixes in megatron_prefixes(src, key).items()}
