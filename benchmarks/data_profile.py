"""Where data_prep's time goes, one core, in this process: each step of encoding a corpus timed alone on
all of it (CPU seconds), and the candidates for the encode step side by side.

Steps: read + json.loads; the content hash that picks the split; encode (plain SentencePiece on whole
documents, data_prep's unit cache from cold, and Hugging Face `tokenizers` with the model converted to
a BPE `Tokenizer`: same ids?); writing (megatron's IndexedDatasetBuilder.add_document per document).
"""

import json
import os
import time
from pathlib import Path


def _cpu(fn):
    start = time.process_time()
    result = fn()
    return result, time.process_time() - start


def hf_tokenizer(model: Path):
    """The SentencePiece BPE model as a Hugging Face `tokenizers` BPE: every vocabulary piece is a merge of
    its two parts (ranked by the piece's score), spaces as "▁" with a dummy prefix, byte fallback. No
    pre-tokenizer: SentencePiece encodes a document whole too."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Tokenizer, models, normalizers

    proto = pb.ModelProto()
    proto.ParseFromString(model.read_bytes())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL}
    scored = sorted((-proto.pieces[vocab[p]].score, k, p[:k], p[k:]) for p in normal for k in range(1, len(p))
                    if p[:k] in normal and p[k:] in normal)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in scored], byte_fallback=True,
                               unk_token=proto.pieces[proto.trainer_spec.unk_id].piece, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    return tok


def profile(corpus: Path, model: Path, work: Path) -> list[dict]:
    os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers: one core, like the rest
    import numpy
    import sentencepiece as spm

    from data_prep.encoder import Encoder
    from data_prep.megatron_io import indexed_dataset, token_dtype
    from data_prep.split import doc_hasher
    from data_prep.writer import batches as writer_batches

    lines = corpus.read_bytes().splitlines()
    texts, t_json = _cpu(lambda: [json.loads(line)["text"] for line in lines])
    digest = doc_hasher("bench")
    _, t_hash = _cpu(lambda: [digest(t) for t in texts])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    dtype = numpy.dtype(token_dtype(sp.vocab_size()))
    batches = list(writer_batches(texts))  # as data_prep's writer groups them
    plain = Encoder(str(model), dtype.char, units=False)
    ids, t_sp = _cpu(lambda: [b for batch in batches for b in plain.encode(batch)])
    units = Encoder(str(model), dtype.char, units=True)
    fast, t_units = _cpu(lambda: [b for batch in batches for b in units.encode(batch)])
    tok = hf_tokenizer(model)
    hf, t_hf = _cpu(lambda: [e.ids for batch in batches for e in tok.encode_batch_fast(batch,
                                                                                     add_special_tokens=False)])
    eod = numpy.array([sp.eos_id()], dtype).tobytes()

    def write() -> None:
        builder = indexed_dataset().IndexedDatasetBuilder(str(work / "profile.bin"), dtype=dtype.type)
        for body in fast:
            doc = numpy.frombuffer(body + eod, dtype)
            builder.add_document(doc, [doc.size])
        builder.finalize(str(work / "profile.idx"))

    _, t_write = _cpu(write)
    tokens = sum(len(b) for b in ids) // dtype.itemsize + len(ids)
    hf_same = sum(numpy.frombuffer(a, dtype).tolist() == b for a, b in zip(ids, hf, strict=True))
    units_same = sum(a == b for a, b in zip(ids, fast, strict=True))
    pipeline = t_json + t_hash + t_units + t_write
    rows = [("read + json.loads", t_json, ""), ("content hash (split)", t_hash, ""),
            ("encode: SentencePiece, whole documents", t_sp, "reference"),
            ("encode: unit cache (data_prep), from cold", t_units, f"{units_same}/{len(ids)} documents same ids"),
            ("encode: HF tokenizers, converted BPE", t_hf, f"{hf_same}/{len(ids)} documents same ids"),
            ("write: IndexedDatasetBuilder.add_document", t_write, "")]
    return [{"step": name, "cpu_seconds": t, "tokens_per_cpu_s": tokens / t,
             "share": t / pipeline if not name.startswith(("encode: Sent", "encode: HF")) else None, "note": note}
            for name, t, note in rows]


def table(rows: list[dict]) -> str:
    lines = ["| step | CPU s | tokens/CPU-s | share of data_prep's path | note |", "|---|---:|---:|---:|---|"]
    for r in rows:
        share = f"{r['share']:.0%}" if r["share"] is not None else ""
        lines.append(f"| {r['step']} | {r['cpu_seconds']:.2f} | {r['tokens_per_cpu_s']:,.0f} | {share} | "
                     f"{r['note']} |")
    return "\n".join(lines)
