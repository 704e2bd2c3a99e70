"""python -m data_prep: build a manifest from flags (a run config's `data.prepare` section is built by
`make data CONFIG=...`, i.e. `python -m launch.data`, which resolves the run config)."""

import argparse
import sys

from .cli import add_stage_flags, run
from .config import HFSource, MegatronSource, PrepareConfig, SourceConfig

EXAMPLES = """
examples:
  python -m data_prep --input 'corpus/*.jsonl.zst' --output-dir data/prepared/web \\
      --vocab-size 32000 --workers 16
  python -m data_prep --hf-dataset allenai/c4 --hf-name en --hf-split validation \\
      --output-dir data/prepared/c4
  python -m data_prep --input 'books/*.txt' --txt-document file \\
      --tokenizer-model data/prepared/web/tokenizer.model --output-dir data/prepared/books
  python -m data_prep --megatron-prefix 'old/web_*_text_document' \\
      --tokenizer-model old/tokenizer.model --output-dir data/prepared/old   # existing shards, not copied
  # on N machines sharing a file system (same flags everywhere):
  python -m data_prep ... --stage tokenizer                  # once
  python -m data_prep ... --shard-of K/N                     # on machine K = 0 .. N-1
  python -m data_prep ... --stage finish                     # once, after all shards

A run config's data: `make data CONFIG=tiny_dyt` (`python -m launch.data tiny_dyt data.prepare.workers=8`;
LAUNCHER=slurm NODES=N runs the shards as a SLURM job array).
Finished partitions are kept: an interrupted run continues where it stopped. A run whose manifest
is complete and matches the config and inputs prints "up to date" and does nothing.
"""

# flag -> attribute of PrepareConfig it sets (when given)
_FLAGS = {
    "output_dir": "output_dir", "workers": "workers", "valid_fraction": "valid_fraction",
    "append_bos": "append_bos", "on_error": "on_error", "max_doc_chars": "max_doc_chars",
    "partition_bytes": "partition_bytes", "merge": "merge", "tokenizer_model": "tokenizer.model",
    "tokenizer_type": "tokenizer.type", "vocab_size": "tokenizer.vocab_size",
    "byte_fallback": "tokenizer.byte_fallback", "character_coverage": "tokenizer.character_coverage",
    "sample_docs": "tokenizer.sample_docs", "sample_chars": "tokenizer.sample_chars", "fast_encode": "fast_encode",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Corpora -> SentencePiece tokenizer -> megatron .bin/.idx shards"
                                            " + manifest.json (parallel, resumable).")
    g = p.add_argument_group("source (one)")
    g.add_argument("-i", "--input", action="append", metavar="PATH",
                   help="file or glob: .jsonl/.ndjson/.txt (optionally .gz/.zst) or .parquet (repeatable)")
    g.add_argument("--hf-dataset", metavar="NAME_OR_DIR", help="HF hub name, builder or saved dataset dir")
    g.add_argument("--hf-name", help="HF dataset config name")
    g.add_argument("--hf-split", default="train", help="HF split (default: train)")
    g.add_argument("--hf-data-files", action="append", default=[], metavar="PATH",
                   help="HF data_files (repeatable)")
    g.add_argument("--no-streaming", action="store_true", help="download the HF dataset, do not stream it")
    g.add_argument("--megatron-prefix", action="append", metavar="PREFIX",
                   help="existing megatron shards (path without .bin/.idx, globs allowed; repeatable): listed "
                        "in the manifest where they are; needs --tokenizer-model")
    g.add_argument("--name", default="data", help="source name, used in shard names (default: data)")
    g.add_argument("--weight", type=float, default=1.0, help="source weight in the blend (default: 1.0)")
    g.add_argument("--text-key", help="JSON key / column holding the text (default: text)")
    g.add_argument("--txt-document", choices=("line", "file"), help=".txt: one document per line or per file")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-model", metavar="PATH", help="use this SentencePiece .model, train none")
    g.add_argument("--tokenizer-type", choices=("bpe", "unigram"))
    g.add_argument("--vocab-size", type=int)
    g.add_argument("--byte-fallback", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--character-coverage", type=float)
    g.add_argument("--sample-docs", type=int, help="documents sampled to train the tokenizer")
    g.add_argument("--sample-chars", type=int, help="bound on the sample's characters")
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", help="where manifest.json, tokenizer.model and the shards go")
    g.add_argument("--workers", type=int, help="worker processes")
    g.add_argument("--valid-fraction", type=float, help="share of documents in the valid split")
    g.add_argument("--append-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="prepend BOS to every document (EOD is always appended)")
    g.add_argument("--on-error", choices=("skip", "fail"), help="bad input records: skip (reported) or fail")
    g.add_argument("--max-doc-chars", type=int, help="longer documents are bad input")
    g.add_argument("--partition-bytes", type=int, help="input bytes per partition (one shard each)")
    g.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="merge each source's shards into one per split")
    g.add_argument("--no-fast-encode", dest="fast_encode", action="store_false", default=None,
                   help="SentencePiece alone, without the unit cache (same ids; see docs/data.md)")
    g.add_argument("--force", action="store_true", help="redo everything, ignoring finished partitions")
    add_stage_flags(p)
    return p


def build_config(args: argparse.Namespace) -> PrepareConfig:
    """The PrepareConfig the flags describe."""
    hf = megatron = None
    if args.hf_dataset:
        hf = HFSource(args.hf_dataset, args.hf_name, args.hf_split, args.hf_data_files,
                      streaming=not args.no_streaming)
    if args.megatron_prefix:
        megatron = MegatronSource(args.megatron_prefix)
    src = SourceConfig(name=args.name, paths=args.input or [], hf=hf, megatron=megatron, weight=args.weight)
    src.text_key = args.text_key or src.text_key
    src.txt_document = args.txt_document or src.txt_document
    cfg = PrepareConfig(sources=[src])
    for dest, attr in _FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            *parents, leaf = attr.split(".")
            obj = cfg
            for name in parents:
                obj = getattr(obj, name)
            setattr(obj, leaf, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (args.input or args.hf_dataset or args.megatron_prefix):
        _parser().error("name a source: --input, --hf-dataset or --megatron-prefix (a run config's data: "
                        "make data CONFIG=...)")
    return run(build_config(args), args.force, args.stage, args.shard_of)


if __name__ == "__main__":
    sys.exit(main())
