"""The final report: per source documents, tokens, split sizes and bad records (loud when any)."""

from pathlib import Path


def _lines(entry: dict) -> str:
    shown = ", ".join(map(str, entry["lines"]))
    more = entry["count"] - len(entry["lines"])
    return f"line{'s' if entry['count'] > 1 else ''} {shown}" + (f" (+{more} more)" if more > 0 else "")


def _encoded(new: list[dict], seconds: float) -> str:
    """What this run encoded, how fast, and by which encoder."""
    shards = [s for r in new for s in r["shards"].values()]
    docs, tokens = sum(s["documents"] for s in shards), sum(s["tokens"] for s in shards)
    rate = f": {docs / seconds:,.0f} docs/s, {tokens / seconds:,.0f} tokens/s" if docs and seconds else ""
    units = [r for r in new if r["encoder"] == "units"]
    how = ""
    if new:
        why = next((r.get("why_not_units") for r in new if r.get("why_not_units")), None)
        how = (f"; unit cache, ids checked against SentencePiece on {sum(r['checked'] for r in units):,} "
               "documents" if len(units) == len(new) else
               "; SentencePiece" + (f" ({len(units)} partitions by the unit cache)" if units else "")
               + (f" (no unit cache: {why})" if why else ""))
    return f"encoded {docs:,} documents, {tokens:,} tokens in {seconds:.1f} s{rate}{how}"


def summary(manifest: dict, path: Path, new: list[dict], seconds: float, reused: int, total: int) -> str:
    """`new`: done records of the partitions this run encoded; `reused`: partitions from an earlier run."""
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
    out.append("  " + _encoded(new, seconds))
    bad = [e for s in manifest["sources"] for e in s["error_details"]]
    if bad:
        out.append(f"WARNING: {sum(e['count'] for e in bad):,} bad input records skipped (on_error: skip):")
        out += [f"  {e['file']}: {e['kind']} x{e['count']} ({_lines(e)}); first: {e['example']}" for e in bad]
    return "\n".join(out)


def shard_summary(shard: tuple[int, int], new: list[dict], reused: int, seconds: float) -> str:
    kept = f" ({reused} kept from an earlier run)" if reused else ""
    return (f"data_prep: shard {shard[0]}/{shard[1]}: {len(new)} partitions{kept}; {_encoded(new, seconds)}. "
            "The finish stage writes the manifest.")
