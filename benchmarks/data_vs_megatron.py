"""data_prep side by side with Megatron-LM's tools/preprocess_data.py: the same corpus, SentencePiece model
and worker counts, whole processes timed in interleaved rounds (each round runs every row once, in
alternating order, so that a busy machine slows both alike).

Megatron-LM runs from the given checkout with the installed megatron-core (`--append-eod`, one
document per JSON line); data_prep runs as `python -m data_prep ... --valid-fraction 0 --merge`, so
both write one .bin/.idx of the same documents and the files can be compared byte for byte.

Per row: wall seconds, CPU seconds of the process and all its workers, peak memory of the process tree
(the sum of its processes' PSS, sampled every 50 ms: pages that forked workers share are counted once,
not once per process as RSS would), docs/s and tokens/s (wall), tokens per CPU-second (the per-core rate:
it does not depend on how many cores were free), and the ratio data_prep / Megatron-LM of both. Both
tools import megatron-core (and torch) first, seconds of CPU that do not grow with the corpus: each
round also runs both on the corpus's first document alone, and "after startup" subtracts that CPU
time, the per-core rate a corpus far bigger than this one would see.
"""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], env: dict, cwd: Path) -> dict:
    """Run `cmd` to the end: wall and CPU seconds (it and its reaped children), peak PSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_full_info().pss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:  # a process ended while it was read
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.read().decode()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": wall, "cpu_seconds": cpu, "peak_pss_mb": peak / 2**20}


def megatron_cmd(checkout: Path, corpus: Path, model: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, str(checkout / "tools" / "preprocess_data.py"), "--input", str(corpus),
            "--output-prefix", str(out / "mlm"), "--tokenizer-type", "SentencePieceTokenizer",
            "--tokenizer-model", str(model), "--workers", str(workers), "--append-eod", "--log-interval", "1000000"]


def data_prep_cmd(corpus: Path, model: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "data_prep", "--input", str(corpus), "--output-dir", str(out), "--name", "bench",
            "--tokenizer-model", str(model), "--workers", str(workers), "--valid-fraction", "0", "--merge",
            "--force"]


def outputs(tool: str, out: Path) -> tuple[Path, Path]:
    prefix = out / "mlm_text_document" if tool == "megatron" else out / "train" / "bench"
    return Path(f"{prefix}.bin"), Path(f"{prefix}.idx")


def count(idx: Path) -> tuple[int, int]:
    """(documents, tokens) of a megatron shard."""
    from data_prep.megatron_io import indexed_dataset, no_rank_warning

    with no_rank_warning():
        index = indexed_dataset().IndexedDataset(str(idx.with_suffix(""))).index
    return len(index.document_indices) - 1, int(index.sequence_lengths.sum())


def side_by_side(checkout: Path, corpus: Path, model: Path, work: Path, workers: list[int], rounds: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    mlm_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}  # its own tree + the installed megatron-core
    first_doc = work / "first_document.jsonl"
    with open(corpus, "rb") as f:
        first_doc.write_bytes(f.readline())
    rows: dict[str, list[dict]] = {}
    plan = [(tool, w, inp) for w in workers for tool in ("megatron", "data_prep") for inp in (corpus, first_doc)]
    for r in range(rounds):
        for tool, w, inp in plan if r % 2 == 0 else plan[::-1]:
            out = work / f"{tool}-w{w}{'-startup' if inp == first_doc else ''}"
            out.mkdir(parents=True, exist_ok=True)
            if tool == "megatron":
                m = measure(megatron_cmd(checkout, inp, model, out, w), mlm_env, checkout)
            else:
                m = measure(data_prep_cmd(inp, model, out, w), env, REPO)
            rows.setdefault(out.name, []).append(m)
            print(f"round {r + 1}/{rounds}: {out.name:22}: {m['seconds']:.1f} s wall, {m['cpu_seconds']:.1f} CPU s, "
                  f"{m['peak_pss_mb']:.0f} MB", flush=True)
    docs, tokens = count(outputs("megatron", work / f"megatron-w{workers[0]}")[1])
    identical = {}
    for w in workers:
        a, b = outputs("megatron", work / f"megatron-w{w}"), outputs("data_prep", work / f"data_prep-w{w}")
        identical[w] = all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    return {"documents": docs, "tokens": tokens, "identical": identical, "runs": rows}


def summarize(result: dict, workers: list[int]) -> list[dict]:
    """Per tool and worker count: the median run of each measure, rates, and data_prep's ratios."""
    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    out = []
    for w in workers:
        pair = {}
        for tool in ("megatron", "data_prep"):
            runs = result["runs"][f"{tool}-w{w}"]
            row = {k: median([r[k] for r in runs]) for k in ("seconds", "cpu_seconds", "peak_pss_mb")}
            startup = median([r["cpu_seconds"] for r in result["runs"][f"{tool}-w{w}-startup"]])
            row |= {"tool": tool, "workers": w, "docs_per_s": result["documents"] / row["seconds"],
                    "tokens_per_s": result["tokens"] / row["seconds"],
                    "tokens_per_cpu_s": result["tokens"] / row["cpu_seconds"], "startup_cpu_seconds": startup,
                    "tokens_per_cpu_s_after_startup": result["tokens"] / (row["cpu_seconds"] - startup)}
            pair[tool] = row
        for k in ("tokens_per_s", "tokens_per_cpu_s", "tokens_per_cpu_s_after_startup"):
            pair["data_prep"][f"ratio_{k}"] = pair["data_prep"][k] / pair["megatron"][k]
        out += [pair["megatron"], pair["data_prep"]]
    return out


def table(rows: list[dict], identical: dict[int, bool]) -> str:
    cols = ["tool", "workers", "wall s", "CPU s", "peak memory MB (PSS)", "docs/s", "tokens/s", "tokens/CPU-s",
            "startup CPU s", "tokens/CPU-s after startup", "× tokens/s", "× tokens/CPU-s", "× after startup",
            "same bytes"]
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 2) + "---|"]
    for r in rows:
        ours = r["tool"] == "data_prep"
        name = "data_prep" if ours else "Megatron-LM preprocess_data.py"
        cells = [name, r["workers"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_pss_mb']:.0f}",
                 f"{r['docs_per_s']:,.0f}", f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_cpu_s']:,.0f}",
                 f"{r['startup_cpu_seconds']:.1f}", f"{r['tokens_per_cpu_s_after_startup']:,.0f}",
                 *(f"{r['ratio_' + k]:.2f}" if ours else "1" for k in ("tokens_per_s", "tokens_per_cpu_s",
                                                                       "tokens_per_cpu_s_after_startup")),
                 ("yes" if identical[r["workers"]] else "NO") if ours else ""]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
