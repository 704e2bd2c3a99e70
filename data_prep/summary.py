"""The final report: per source documents, tokens, split sizes and bad records (loud when any)."""

from pathlib import Path


def _lines(entry: dict) -> str:
    shown = ", ".join(map(str, entry["lines"]))
    more = entry["count"] - len(entry["lines"])
    return f"line{'s' if entry['count'] > 1 else ''} {shown}" + (f" (+{more} more)" if more > 0 else "")


def summary(manifest: dict, path: Path, n_docs: int, n_tokens: int, seconds: float, reused: int,
            total: int) -> str:
    """`n_docs`, `n_tokens`: encoded by this run; `reused`: partitions kept from an earlier run."""
    docs = {}
    for split, shards in manifest["splits"].items():
        for s in shards:
            docs[s["source"], split] = docs.get((s["source"], split), 0) + s["documents"]
    tok = manifest["tokenizer"]
    kept = f", {reused} kept from an earlier run" if reused else ""
    out = [f"data_prep: wrote {path} ({total} partition{'s' * (total != 1)}{kept})",
           f"  {tok['path']}: vocab {tok['vocab_size']}, eod {tok['eod_id']}; {manifest['dtype']} ids",
           f"  {'source':<16}{'documents':>12}{'tokens':>15}{'train docs':>12}{'valid docs':>12}{'bad':>9}"]
    for s in manifest["sources"]:
        train, valid = docs.get((s["name"], "train"), 0), docs.get((s["name"], "valid"), 0)
        out.append(f"  {s['name']:<16}{s['documents']:>12,}{s['tokens']:>15,}{train:>12,}{valid:>12,}"
                   f"{sum(s['errors'].values()):>9,}")
    rate = ""
    if n_docs and seconds:
        rate = f": {n_docs / seconds:,.0f} docs/s, {n_tokens / seconds:,.0f} tokens/s"
    out.append(f"  encoded {n_docs:,} documents, {n_tokens:,} tokens in {seconds:.1f} s{rate}")
    bad = [e for s in manifest["sources"] for e in s["error_details"]]
    if bad:
        out.append(f"WARNING: {sum(e['count'] for e in bad):,} bad input records skipped (on_error: skip):")
        out += [f"  {e['file']}: {e['kind']} x{e['count']} ({_lines(e)}); first: {e['example']}" for e in bad]
    return "\n".join(out)
