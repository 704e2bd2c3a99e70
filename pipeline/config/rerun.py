"""Rerunning a run directory with a changed config: what may change, what must not, and the message.

A run directory holds one training run. Rerunning it resumes that run, so a change to what defines the model
or its data stream would silently mix two experiments: it is refused, naming each key old → new. A change of
parallel layout is allowed only when asked for (it restores less: see LAYOUT_NOTE). Anything else (more
steps, intervals, logging) is allowed and listed.
"""

from .loader import ConfigError

# What defines the model or the data stream (prefixes of flattened keys).
DEFINING = ("engine", "model.", "train.seed", "train.global_batch_size", "train.precision", "data.manifest",
            "data.prepare.sources", "data.prepare.tokenizer", "data.prepare.valid_fraction")
LAYOUT = ("parallel.", "launch.nodes", "launch.nproc_per_node", "deepspeed.zero_stage")
LAYOUT_NOTE = ("megatron engine: weights, schedule and step are restored, optimizer state restarts (its shards "
               "follow the old layout); deepspeed engine: resharded through DeepSpeed's universal checkpoint")
# The LR schedule is restored from the checkpoint (megatron's scheduler state): these do not re-plan it.
SCHEDULE = ("train.steps", "schedule.", "optimizer.lr", "optimizer.min_lr")
IGNORED = ("checkpoint.allow_config_change", "checkpoint.resume", "launch.launcher", "launch.slurm.")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def config_diff(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, object, object]]:
    """(key, old, new) for every flattened key whose value differs, sorted by key."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not k.startswith(ignore)]


def check_rerun(saved: dict, new: dict, allowed: list[str], explicit_resume: bool = False) -> list[str]:
    """Raise ConfigError for defining (or, unless allowed/explicit, layout) changes between the config a run
    was trained with and the new one; return the accepted changes as "key: old → new" lines."""
    def is_allowed(key: str) -> bool:
        return any(key == a or key.startswith(a.rstrip(".") + ".") for a in allowed)

    refused, layout, accepted = [], [], []
    for key, old, now in config_diff(saved, new, IGNORED):
        line = f"{key}: {old!r} → {now!r}"
        if key.startswith(DEFINING) and not is_allowed(key):
            refused.append(line)
        elif key.startswith(LAYOUT) and not (explicit_resume or is_allowed(key)):
            layout.append(line)
        elif key.startswith(SCHEDULE):
            accepted.append(line + " (the LR schedule saved in the checkpoint continues unchanged)")
        else:
            accepted.append(line)
    if refused or layout:
        parts = []
        if refused:
            parts.append("it changes what defines the model or its data:\n  " + "\n  ".join(refused) +
                         "\nStart a new run instead (name=<new name>, optionally checkpoint.init_from=<a checkpoint "
                         "of this run> to start from its weights)")
        if layout:
            parts.append("it changes the parallel layout:\n  " + "\n  ".join(layout) + f"\nOn resume the {LAYOUT_NOTE}")
        keys = [line.split(":")[0] for line in refused + layout]
        raise ConfigError(
            "this run directory already holds a run trained with another config, and resuming it with this one "
            "is refused because " + ";\nand ".join(parts) +
            f".\nTo resume anyway, say so: checkpoint.allow_config_change=[{','.join(keys)}]")
    return accepted
