"""Data prep throughput. Three modes:

    python benchmarks/bench_data.py                       # scaling: 32 MiB generated corpus, workers 1..cpus
    python benchmarks/bench_data.py --mb 512 --workers 1,8,32 --vocab 32000 --tag bignode
    python benchmarks/bench_data.py --megatron-lm ~/Megatron-LM --workers 1,2   # side by side (make bench-data
                                                          # MEGATRON_LM=...): real text, 32k BPE, 80 MiB
    python benchmarks/bench_data.py --profile             # where the time goes, one core (same corpus)

Side by side and profile run on a real-text corpus (--corpus FILE.jsonl, or --real-mb MiB of this
Python installation's text files, see data_corpus.py) with a SentencePiece model (--tokenizer-model,
or one trained with data_prep's recipe: --vocab, default 32000 there); see data_vs_megatron.py and
data_profile.py. Results: benchmarks/results/data/{vs_megatron,profile}[-TAG].{json,md}.

Scaling mode: `data_prep` with 1..N workers against a straightforward single-process baseline
(read a line → json.loads → sp.encode → IndexedDatasetBuilder) on a generated corpus, in the same run.

Every row but the first is a whole job: read, encode, write .bin/.idx (data_prep also plans the
partitions, forks the workers, checksums the shards and writes the manifest). "tokenizer only" is
`sp.encode` alone on texts already in memory, in one thread: what one core can do at best.
Repeats run round-robin (every row once, then again) and each row keeps its fastest run, so that a
busy machine slows all rows alike. "tokens/CPU-s" divides by the CPU time of the process and its
workers: it shows the per-token overhead whatever the machine's load. All data_prep rows must write
identical shards (checked). Results: benchmarks/results/data/bench_data[-TAG].{json,md}.
"""

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import random
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from results_io import machine_facts, write_results  # noqa: E402

from data_prep import prepare  # noqa: E402
from data_prep.config import PrepareConfig, SourceConfig, TokenizerConfig  # noqa: E402
from data_prep.megatron_io import indexed_dataset, token_dtype  # noqa: E402
from data_prep.tokenizer import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "data"


def generate_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """JSON lines of text with Zipf-distributed synthetic words and a little punctuation and layout;
    returns the number of documents."""
    rng = random.Random(seed)
    syllables = "ka lo mi tor en pra zu qui ve dan os ret ul bi ne".split()
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(30_000)})
    weights = [1 / (rank + 1) for rank in range(len(words))]
    target, written, docs = megabytes * 2**20, 0, 0
    with open(path, "w") as f:
        while written < target:
            body = rng.choices(words, weights, k=rng.randint(50, 2000))
            for i in range(0, len(body), rng.randint(8, 30)):
                body[i] += rng.choice([",", ".", ".\n", ":\n    ", " -", ""])
            line = json.dumps({"text": " ".join(body), "id": docs}) + "\n"
            f.write(line)
            written, docs = written + len(line), docs + 1
    return docs


class Clock:
    """Wall and CPU seconds of a block; CPU counts this process and its finished child processes."""

    @staticmethod
    def _cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu


def tokenizer_only(model: Path, corpus: Path, limit_bytes: int = 16 * 2**20) -> dict:
    import sentencepiece as spm

    texts, size = [], 0
    with open(corpus) as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(line)
            if size >= limit_bytes:
                break
    sp = spm.SentencePieceProcessor(model_file=str(model))
    with Clock() as clock:
        tokens = sum(len(ids) + 1 for ids in sp.encode(texts, num_threads=1))
    return {"documents": len(texts), "tokens": tokens, "seconds": clock.wall, "cpu_seconds": clock.cpu}


def baseline(model: Path, corpus: Path, out: Path) -> dict:
    """What one would write first: one process, one document at a time."""
    import numpy
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    eod, docs, tokens = sp.eos_id(), 0, 0
    dtype = getattr(numpy, token_dtype(sp.vocab_size()))
    with Clock() as clock:
        builder = indexed_dataset().IndexedDatasetBuilder(f"{out}.bin", dtype=dtype)
        with open(corpus) as f:
            for line in f:
                ids = sp.encode(json.loads(line)["text"]) + [eod]
                builder.add_document(ids, [len(ids)])
                docs, tokens = docs + 1, tokens + len(ids)
        builder.finalize(f"{out}.idx")
    return {"documents": docs, "tokens": tokens, "seconds": clock.wall, "cpu_seconds": clock.cpu}


def data_prep_run(model: Path, corpus: Path, out: Path, workers: int, partition_bytes: int) -> dict:
    cfg = PrepareConfig(output_dir=str(out), sources=[SourceConfig(name="bench", paths=[str(corpus)])],
                        tokenizer=TokenizerConfig(model=str(model)), workers=workers, valid_fraction=0.01,
                        partition_bytes=partition_bytes)
    with Clock() as clock, contextlib.redirect_stdout(io.StringIO()):  # the run's summary: the table has it
        manifest = json.loads(prepare(cfg, force=True).read_text())
    shards = [s for split in manifest["splits"].values() for s in split]
    return {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
            "seconds": clock.wall, "cpu_seconds": clock.cpu, "partitions": len(manifest["splits"]["train"]),
            "shards_sha256": sorted(s["sha256"]["bin"] for s in shards)}


def round_robin(runs: dict[str, tuple[int, Callable[[], dict]]], repeat: int) -> list[dict]:
    """Each run `repeat` times, interleaved; the fastest of each."""
    best: dict[str, dict] = {}
    for _ in range(repeat):
        for name, (workers, fn) in runs.items():
            row = fn() | {"run": name, "workers": workers}
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    return list(best.values())


def table(rows: list[dict], base: float) -> str:
    columns = ["run", "workers", "documents", "tokens", "seconds", "tokens/s", "per worker", "tokens/CPU-s",
               "vs baseline"]
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
    for r in rows:
        rate = r["tokens"] / r["seconds"]
        cells = [r["run"], r["workers"], f"{r['documents']:,}", f"{r['tokens']:,}", f"{r['seconds']:.2f}",
                 f"{rate:,.0f}", f"{rate / r['workers']:,.0f}", f"{r['tokens'] / r['cpu_seconds']:,.0f}",
                 f"{rate / base:.2f}x"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def real_text_main(args: argparse.Namespace) -> None:
    """Side by side with Megatron-LM (--megatron-lm) and/or the profile (--profile) on real text."""
    import data_profile
    import data_vs_megatron
    from data_corpus import describe, python_corpus, train_tokenizer

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/bench_data.py", *sys.argv[1:]])
    try:
        if args.corpus:
            corpus, info = Path(args.corpus), describe(Path(args.corpus))
        else:
            corpus = work / "corpus.jsonl"
            info = python_corpus(corpus, args.real_mb)
        if args.tokenizer_model:
            model = Path(args.tokenizer_model)
        else:
            with Clock() as clock:
                model = train_tokenizer(corpus, work / "tokenizer.model", args.vocab or 32000, args.type)
            print(f"tokenizer: {args.type} {args.vocab or 32000} trained in {clock.wall:.1f} s")
        vocab = args.vocab or 32000
        head = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "command": command,
                "note": args.note, "corpus": info, "tokenizer": {"model": str(model), "sha256": sha256(model)},
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "load_average_start": os.getloadavg()}}
        about = (f"`{command}` ({head['date']}; {os.cpu_count()} CPUs, Python {platform.python_version()}). "
                 f"Corpus: {info['source']}, {info['documents']:,} documents, {info['bytes'] / 2**20:.1f} MiB, "
                 f"sha256 {info['sha256'][:12]}. Tokenizer: SentencePiece {args.type} "
                 f"{'(given)' if args.tokenizer_model else f'{vocab}, data_prep recipe'}.")
        print(f"corpus: {info['documents']:,} documents, {info['bytes'] / 2**20:.1f} MiB; load average "
              f"{head['machine']['load_average_start'][0]:.2f}")
        if args.profile:
            rows = data_profile.profile(corpus, model, work)
            md = data_profile.table(rows)
            print(md)
            write_results(RESULTS, "profile" + (f"-{args.tag}" if args.tag else ""), head | {"rows": rows},
                           f"# Data prep: where the time goes (one core)\n\n{about}\n\n{md}\n"
                           f"{_load_footer(head, args.note)}")
        if args.megatron_lm:
            workers = [int(w) for w in (args.workers or "1,2").split(",")]
            result = data_vs_megatron.side_by_side(Path(args.megatron_lm), corpus, model, work, workers,
                                                   args.repeat)
            rows = data_vs_megatron.summarize(result, workers)
            md = data_vs_megatron.table(rows, result["identical"])
            print(md)
            checkout = _git_head(Path(args.megatron_lm))
            write_results(RESULTS, "vs_megatron" + (f"-{args.tag}" if args.tag else ""),
                           head | {"megatron_lm": checkout, "rows": rows} | result,
                           f"# data_prep vs Megatron-LM preprocess_data.py\n\n{about} Megatron-LM at {checkout}. "
                           f"Medians of {args.repeat} interleaved rounds; {result['documents']:,} documents, "
                           f"{result['tokens']:,} tokens.\n\n{md}\n{_load_footer(head, args.note)}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_head(checkout: Path) -> str:
    import subprocess

    r = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "(not a git checkout)"


def _load_footer(head: dict, note: str) -> str:
    start, end = head["machine"]["load_average_start"][0], os.getloadavg()[0]
    return (f"\nLoad average (1 min) at the start and end: {start:.2f}, {end:.2f} on {os.cpu_count()} CPUs."
            + (f"\n\n{note}" if note else "") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megatron-lm", metavar="CHECKOUT", help="side by side with this Megatron-LM checkout's "
                    "tools/preprocess_data.py")
    ap.add_argument("--profile", action="store_true", help="where the time goes, one core")
    ap.add_argument("--corpus", metavar="FILE", help="side by side / profile: a JSON-lines corpus with 'text'")
    ap.add_argument("--real-mb", type=float, default=80, help="... else this many MiB of this Python "
                    "installation's text files (default 80)")
    ap.add_argument("--tokenizer-model", metavar="FILE", help="side by side / profile: this SentencePiece model")
    ap.add_argument("--mb", type=float, default=32, help="scaling: generated corpus size in MiB (default 32)")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default: scaling 1..cpu "
                    "count, side by side 1,2)")
    ap.add_argument("--vocab", type=int, help="SentencePiece vocabulary to train (default: scaling 4096, real "
                    "text 32000)")
    ap.add_argument("--type", default="bpe", choices=("bpe", "unigram"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of each row (scaling: the fastest kept; side by "
                    "side: interleaved rounds, medians; default 3)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. a shared machine)")
    ap.add_argument("--workdir", help="where the corpus and outputs go (default: a temp dir, then removed)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmark's own modules
    if args.megatron_lm or args.profile:
        return real_text_main(args)
    args.vocab = args.vocab or 4096
    workers = [int(w) for w in args.workers.split(",")] if args.workers else range(1, os.cpu_count() + 1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    indexed_dataset()  # import megatron once, outside every timing

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / "corpus.jsonl"
        n_docs = generate_corpus(corpus, args.mb)
        size = corpus.stat().st_size
        load_start = os.getloadavg()[0]
        print(f"corpus: {n_docs:,} documents, {size / 2**20:.1f} MiB; load average {load_start:.2f}")
        with Clock() as clock:
            sample = (json.loads(line)["text"] for _, line in zip(range(2000), open(corpus), strict=False))
            model = work / "tokenizer.model"
            model.write_bytes(train(sample, TokenizerConfig(type=args.type, vocab_size=args.vocab)))
        print(f"tokenizer: {args.type} {args.vocab} trained in {clock.wall:.1f} s")

        partition_bytes = max(2**20, size // (4 * max(workers)))  # enough partitions to keep all busy
        runs = {"tokenizer only (sp.encode, 1 thread)": (1, lambda: tokenizer_only(model, corpus)),
                "baseline (1 process)": (1, lambda: baseline(model, corpus, work / "baseline"))}
        for w in workers:
            runs[f"data_prep ({w} worker{'s' * (w > 1)})"] = (
                w, lambda w=w: data_prep_run(model, corpus, work / f"w{w}", w, partition_bytes))
        rows = round_robin(runs, args.repeat)
        base = rows[1]["tokens"] / rows[1]["seconds"]
        identical = len({tuple(r["shards_sha256"]) for r in rows[2:]}) == 1
        md = table(rows, base)
        print(md)
        print(f"data_prep outputs identical across worker counts: {identical}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    command = shlex.join(["python", "benchmarks/bench_data.py", *sys.argv[1:]])
    machine = machine_facts(load_start)
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"date": date, "command": command, "note": args.note, "machine": machine,
              "corpus": {"documents": n_docs, "bytes": size, "seed": 0},
              "tokenizer": {"type": args.type, "vocab_size": args.vocab}, "partition_bytes": partition_bytes,
              "outputs_identical": identical,
              "rows": [{k: v for k, v in r.items() if k != "shards_sha256"} for r in rows]}
    stem = "bench_data" + (f"-{args.tag}" if args.tag else "")
    header = (f"`{command}` ({result['date']}; {machine['cpus']} CPUs, {machine['platform']}, Python "
              f"{machine['python']}; corpus {n_docs:,} documents, {size / 2**20:.1f} MiB; {args.type} vocab "
              f"{args.vocab}; partitions of {partition_bytes / 2**20:.1f} MiB; best of {args.repeat})")
    footer = (f"data_prep outputs identical across worker counts: {identical}. Load average at the start "
              f"and end: {load_start:.2f}, {machine['load_average_end']:.2f}.")
    note = f"\n\n{args.note}" if args.note else ""
    write_results(RESULTS, stem, result, f"# Data prep throughput\n\n{header}\n\n{md}\n\n{footer}{note}\n")


if __name__ == "__main__":
    main()
