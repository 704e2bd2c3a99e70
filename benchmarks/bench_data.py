"""Data prep throughput: `data_prep` with 1..N workers against a straightforward single-process baseline
(read a line → json.loads → sp.encode → IndexedDatasetBuilder) on a generated corpus, in the same run.

    python benchmarks/bench_data.py                       # 32 MiB corpus, workers 1..cpu count
    python benchmarks/bench_data.py --mb 512 --workers 1,8,32 --vocab 32000 --tag bignode

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=32, help="generated corpus size in MiB (default 32)")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default 1..cpu count)")
    ap.add_argument("--vocab", type=int, default=4096, help="SentencePiece vocabulary (default 4096)")
    ap.add_argument("--type", default="bpe", choices=("bpe", "unigram"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of each row, the fastest kept (default 3)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--note", default="", help="a remark stored with the results (e.g. a shared machine)")
    ap.add_argument("--workdir", help="where the corpus and outputs go (default: a temp dir, then removed)")
    args = ap.parse_args()
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
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_start": load_start, "load_average_end": os.getloadavg()[0]}
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"date": date, "command": command, "note": args.note, "machine": machine,
              "corpus": {"documents": n_docs, "bytes": size, "seed": 0},
              "tokenizer": {"type": args.type, "vocab_size": args.vocab}, "partition_bytes": partition_bytes,
              "outputs_identical": identical,
              "rows": [{k: v for k, v in r.items() if k != "shards_sha256"} for r in rows]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "bench_data" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    header = (f"`{command}` ({result['date']}; {machine['cpus']} CPUs, {machine['platform']}, Python "
              f"{machine['python']}; corpus {n_docs:,} documents, {size / 2**20:.1f} MiB; {args.type} vocab "
              f"{args.vocab}; partitions of {partition_bytes / 2**20:.1f} MiB; best of {args.repeat})")
    footer = (f"data_prep outputs identical across worker counts: {identical}. Load average at the start "
              f"and end: {load_start:.2f}, {machine['load_average_end']:.2f}.")
    note = f"\n\n{args.note}" if args.note else ""
    (RESULTS / f"{stem}.md").write_text(f"# Data prep throughput\n\n{header}\n\n{md}\n\n{footer}{note}\n")
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
