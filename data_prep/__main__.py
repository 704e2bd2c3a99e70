"""python -m data_prep: build a manifest from a run config's `data.prepare` section, or from flags."""

import argparse
import sys
from pathlib import Path

from .build import prepare
from .config import HFSource, PrepareConfig, SourceConfig
from .errors import DataPrepError

EXAMPLES = """
examples:
  python -m data_prep --config tiny_dyt                      # the run config's data.prepare section
  python -m data_prep --config tiny_dyt -o data.prepare.workers=8
  python -m data_prep --input 'corpus/*.jsonl.zst' --output-dir data/prepared/web \\
      --vocab-size 32000 --workers 16
  python -m data_prep --hf-dataset allenai/c4 --hf-name en --hf-split validation \\
      --output-dir data/prepared/c4
  python -m data_prep --input 'books/*.txt' --txt-document file \\
      --tokenizer-model data/prepared/web/tokenizer.model --output-dir data/prepared/books

Flags override the run config; --input/--hf-dataset replace its sources with one source.
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
    "sample_docs": "tokenizer.sample_docs", "sample_chars": "tokenizer.sample_chars",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Corpora -> SentencePiece tokenizer -> megatron .bin/.idx shards"
                                            " + manifest.json (parallel, resumable).")
    g = p.add_argument_group("run config")
    g.add_argument("--config", help="run config name (configs/<name>.yaml) or path; uses its data.prepare")
    g.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config override, e.g. data.prepare.workers=8 (repeatable)")
    g = p.add_argument_group("one-off source (replaces the run config's sources)")
    g.add_argument("-i", "--input", action="append", metavar="PATH",
                   help="file or glob: .jsonl/.ndjson/.txt (optionally .gz/.zst) or .parquet (repeatable)")
    g.add_argument("--hf-dataset", metavar="NAME_OR_DIR", help="HF hub name, builder or saved dataset dir")
    g.add_argument("--hf-name", help="HF dataset config name")
    g.add_argument("--hf-split", default="train", help="HF split (default: train)")
    g.add_argument("--hf-data-files", action="append", default=[], metavar="PATH",
                   help="HF data_files (repeatable)")
    g.add_argument("--no-streaming", action="store_true", help="download the HF dataset, do not stream it")
    g.add_argument("--name", default="data", help="source name, used in shard names (default: data)")
    g.add_argument("--weight", type=float, default=1.0, help="source weight in the blend (default: 1.0)")
    g.add_argument("--text-key", help="JSON key / column holding the text, for every source (default: text)")
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
    g.add_argument("--force", action="store_true", help="redo everything, ignoring finished partitions")
    return p


def _from_run_config(name: str, overrides: list[str]) -> PrepareConfig | None:
    from pipeline.config import load_config

    run = load_config(name, overrides)
    if run.data.prepare is not None:
        return run.data.prepare
    if run.data.manifest and Path(run.data.manifest).is_file():
        print(f"data_prep: {name} uses the prebuilt {run.data.manifest}; nothing to prepare")
        return None
    raise DataPrepError(f"data.prepare: {name} has no data.prepare section and data.manifest "
                        f"{run.data.manifest or '(unset)'} does not exist")


def build_config(args: argparse.Namespace) -> PrepareConfig | None:
    """The PrepareConfig the flags describe; None when the run config needs no preparation."""
    if args.config:
        cfg = _from_run_config(args.config, args.override)
        if cfg is None:
            return None
    elif args.override:
        raise DataPrepError("--override needs --config (use the flags for one-off jobs)")
    else:
        cfg = PrepareConfig()
    if args.input or args.hf_dataset:
        hf = None
        if args.hf_dataset:
            hf = HFSource(args.hf_dataset, args.hf_name, args.hf_split, args.hf_data_files,
                          streaming=not args.no_streaming)
        cfg.sources = [SourceConfig(name=args.name, paths=args.input or [], hf=hf, weight=args.weight)]
    for src in cfg.sources:
        src.text_key = args.text_key or src.text_key
        src.txt_document = args.txt_document or src.txt_document
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
    try:
        from pipeline.config import ConfigError
    except ImportError:  # data_prep used without the pipeline package
        ConfigError = DataPrepError  # noqa: N806
    try:
        cfg = build_config(args)
        if cfg is not None:
            prepare(cfg, force=args.force)
    except (DataPrepError, ConfigError) as e:
        print(f"data_prep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("data_prep: interrupted; finished partitions are kept, run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
