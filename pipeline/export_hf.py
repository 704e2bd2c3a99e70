"""Export a run's checkpoint as a Hugging Face `transformers` model folder.

    python -m pipeline.export_hf runs/tiny_dyt                 # latest checkpoint → runs/tiny_dyt/hf/step_…
    python -m pipeline.export_hf runs/tiny_dyt --step 200 --out /models/tiny_dyt --overwrite

RMSNorm runs become stock `LlamaForCausalLM`; DyT/Derf runs (and RMSNorm with QK-norm or the embedding
scalar) become `LlamaDyTForCausalLM`, shipped as custom code in the folder (`trust_remote_code=True`).
"""

import argparse
import logging
import sys

import pipeline.runtime  # noqa: F401  (first: its filters for megatron's import-time notes)
from pipeline.checkpoint import CheckpointError
from pipeline.hf.export import DTYPES, ExportError, export_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.export_hf", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("run_dir", help="the run directory (holds config.yaml and checkpoints/)")
    ap.add_argument("--step", type=int, help="checkpoint step to export (default: the latest complete one)")
    ap.add_argument("--out", help="output folder (default: RUN_DIR/hf/step_NNNNNNN)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    ap.add_argument("--max-shard-size", default="5GB",
                    help="split model.safetensors into shards of at most this size, with an index (default 5GB)")
    ap.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                    help="weight dtype (default auto: the checkpoint's parameter dtype)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_run(args.run_dir, args.step, args.out, args.overwrite, args.max_shard_size, args.dtype)
    except (ExportError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # dist_checkpointing's workers may re-import __main__ (spawn): keep this guard
    sys.exit(main())
