"""SLURM launcher: one sbatch script per submission, one `srun` task per node running torchrun.

The script is generated from the resolved config and nothing else. Every value that reaches it is
checked here first: values in `#SBATCH` lines (which sbatch parses itself, with its own quoting and `#`
comments) must use a conservative character set; values in the shell body go through `shlex.quote`;
no value may hold a newline or another control character. A bad value is a `ConfigError` naming its key.

Preemption: `--signal=TERM@grace` (no `B:`) signals the training processes, which agree on a step, save a
checkpoint, write status.json "preempted" and exit 0. The batch script then reads status.json (not
torchrun's exit code: torchrun exits 1 after a SIGTERM) and requeues itself while the restart budget
lasts; the requeued job resumes from `<run_dir>/checkpoints/latest`.

A job array runs several runs (a sweep) under one job ID: task k trains run k, in its own run dir.
"""

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ConfigError, RunConfig

# What sbatch reads from an `#SBATCH` line without surprises: no whitespace, quotes, backslash or `#`
# (sbatch's own argument parser treats those specially), no `$`/`;`/backtick, nothing unprintable.
_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@+=/&|!*()\[\]^~-]+")  # constraints use &|!*()[]
_PATH_IN_SBATCH = re.compile(r"[A-Za-z0-9_.,:@+=/-]+")  # also no `%`: sbatch expands %j, %x, ...
_ALLOWED = {_SBATCH_VALUE: "letters, digits and _.,:@+=/-&|!*()[]^~",
            _PATH_IN_SBATCH: "letters, digits and _.,:@+=/-"}
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# [days-]hours:minutes:seconds and the other forms sbatch --time accepts.
_TIME = re.compile(r"(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                   r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+):(?P<ss>\d+)|(?P<mo>\d+))")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Options the launcher sets itself, each with the config key that controls it. Short forms included.
_MANAGED = {
    "job-name": "name", "nodes": "launch.nodes", "ntasks": "launch.nodes",
    "ntasks-per-node": "launch.nodes (one task per node)", "gpus": "launch.slurm.gpus_per_node",
    "gpus-per-node": "launch.slurm.gpus_per_node", "cpus-per-task": "launch.slurm.cpus_per_task",
    "time": "launch.slurm.time", "partition": "launch.slurm.partition", "account": "launch.slurm.account",
    "qos": "launch.slurm.qos", "constraint": "launch.slurm.constraint",
    "signal": "launch.slurm.signal_grace_s",
    "requeue": "launch.slurm.max_restarts", "no-requeue": "launch.slurm.max_restarts",
    "open-mode": "the launcher (append)", "output": "output_dir (logs go to <run_dir>/logs)",
    "error": "output_dir (logs go to <run_dir>/logs)", "array": "--sweep / --sweep-file",
    "chdir": "the launcher (the submission directory)", "wrap": "the launcher",
}
_MANAGED_SHORT = {"J": "job-name", "N": "nodes", "n": "ntasks", "G": "gpus", "c": "cpus-per-task",
                  "t": "time", "p": "partition", "A": "account", "q": "qos", "C": "constraint", "o": "output",
                  "e": "error", "a": "array", "D": "chdir"}
_MAX_SIGNAL_S = 65535  # sbatch stores the signal lead time in 16 bits

# The batch script reads status.json with this (stdlib only, so no dependency on the training imports).
# A status written before this attempt started is "stale": a crash before training wrote anything must
# not be mistaken for the previous attempt's "preempted".
_READ_STATUS = """import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("missing", 0)
    raise SystemExit
print(s.get("state", "unknown") if s.get("time", 0) >= float(sys.argv[2]) else "stale", s.get("step", 0))"""


@dataclass(frozen=True)
class Run:
    """One training run of a submission: its resolved config and where that config is saved."""

    cfg: RunConfig
    config_path: Path

    @property
    def run_dir(self) -> Path:
        return self.config_path.parent


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def _no_control(key: str, value: str) -> None:
    if _CONTROL.search(value):
        _fail(key, f"{value!r} contains a newline or control character")


def _sbatch_value(key: str, value: str, pattern: re.Pattern = _SBATCH_VALUE) -> str:
    _no_control(key, value)
    if not pattern.fullmatch(value):
        bad = sorted({c for c in value if not pattern.fullmatch(c)})
        _fail(key, f"{value!r} cannot go in an #SBATCH line: characters {''.join(bad)!r} are not allowed "
              f"(use {_ALLOWED[pattern]})")
    return value


def sbatch_path(key: str, value: str) -> str:
    """A path that can go in an #SBATCH line (e.g. --output), or a ConfigError naming `key`."""
    return _sbatch_value(key, value, _PATH_IN_SBATCH)


def time_limit_s(value: str) -> int | None:
    """Seconds in an sbatch --time value; None for UNLIMITED/INFINITE."""
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME.fullmatch(value)
    if not m:
        _fail("launch.slurm.time", f"{value!r} is not a SLURM time: use minutes, MM:SS, HH:MM:SS, D-HH, "
              "D-HH:MM or D-HH:MM:SS")
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "h" in g:
        return (g["h"] * 60 + g["m"]) * 60 + g["s"]
    if "mm" in g:
        return g["mm"] * 60 + g["ss"]
    return g["mo"] * 60


def _extra_option(key: str, item: str) -> str:
    _sbatch_value(key, item)
    m = re.fullmatch(r"--([A-Za-z][A-Za-z0-9-]*)(=.+)?|-([A-Za-z])(.*)", item)
    if not m:
        _fail(key, f"{item!r} is not an sbatch option: write one option per entry as --name or --name=value")
    long, short = m.group(1), m.group(3)
    name = long or _MANAGED_SHORT.get(short, "")
    # sbatch accepts any unambiguous prefix of a long option (getopt_long): --part means --partition.
    clash = next((o for o in _MANAGED if o == name or (long and o.startswith(name))), None)
    if clash:
        _fail(key, f"{item!r}: --{clash} is set by the launcher from {_MANAGED[clash]}")
    return item


def gpus_per_node(cfg: RunConfig) -> int:
    """GPUs to request per node: launch.slurm.gpus_per_node, else one per process when training on CUDA."""
    s = cfg.launch.slurm
    if s.gpus_per_node is not None:
        return s.gpus_per_node
    return cfg.launch.nproc_per_node if cfg.train.device == "cuda" else 0


def validate(cfg: RunConfig) -> None:
    """Every launch.slurm value that reaches the script, and the numbers that must make sense together."""
    s = cfg.launch.slurm
    for key, v in (("launch.slurm.partition", s.partition), ("launch.slurm.account", s.account),
                   ("launch.slurm.qos", s.qos), ("launch.slurm.constraint", s.constraint)):
        if v is not None:
            _sbatch_value(key, v)
    _sbatch_value("name", cfg.name, _PATH_IN_SBATCH)
    _sbatch_value("launch.slurm.time", s.time)
    limit = time_limit_s(s.time)
    if not 1 <= s.signal_grace_s <= _MAX_SIGNAL_S:
        _fail("launch.slurm.signal_grace_s",
              f"must be in [1, {_MAX_SIGNAL_S}] seconds, got {s.signal_grace_s}")
    if limit is not None and s.signal_grace_s >= limit:
        _fail("launch.slurm.signal_grace_s", f"{s.signal_grace_s} s is not shorter than launch.slurm.time "
              f"{s.time!r} ({limit} s): training would be told to stop as soon as it starts")
    if s.max_restarts < 0:
        _fail("launch.slurm.max_restarts", f"must be >= 0, got {s.max_restarts}")
    if s.cpus_per_task is not None and s.cpus_per_task < 1:
        _fail("launch.slurm.cpus_per_task", f"must be >= 1 (or null), got {s.cpus_per_task}")
    if s.gpus_per_node is not None and s.gpus_per_node < 0:
        _fail("launch.slurm.gpus_per_node", f"must be >= 0 (or null), got {s.gpus_per_node}")
    for i, item in enumerate(s.extra_sbatch):
        _extra_option(f"launch.slurm.extra_sbatch[{i}]", item)
    for k, v in s.env.items():
        if not _ENV_KEY.fullmatch(k):
            _fail(f"launch.slurm.env.{k}", "not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        _no_control(f"launch.slurm.env.{k}", v)


def job_env(cfg: RunConfig) -> dict[str, str]:
    """Exported in the batch script: launcher defaults, then launch.slurm.env (which may override them)."""
    return {
        # megatron's TP/SP communication overlap needs a single CUDA work queue per device.
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",
        # A collective stuck after a rank died aborts the job instead of hanging until the timeout.
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "PYTHONUNBUFFERED": "1",  # training output reaches the job log as it happens
        **cfg.launch.slurm.env,
    }


def env_exports(env: dict[str, str]) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def _same_launch(runs: list[Run]) -> None:
    first = runs[0].cfg
    for r in runs[1:]:
        if r.cfg.launch != first.launch:
            _fail(f"{r.cfg.name}: launch", "every run of an array job needs the same launch section (one "
                  f"#SBATCH header for all); it differs from {first.name}'s")
        if r.cfg.train.device != first.train.device:
            _fail(f"{r.cfg.name}: train.device", f"differs from {first.name}'s (decides the GPU request)")


def resource_options(cfg: RunConfig, cpus_per_task: int | None) -> list[str]:
    """#SBATCH options for what launch.slurm asks for (values checked by `validate`), GPUs aside."""
    s = cfg.launch.slurm
    opts = [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task else []
    opts.append(f"--time={s.time}")
    opts += [f"--{opt}={v}" for opt, v in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                                           ("constraint", s.constraint)) if v is not None]
    return opts


class SubmitError(Exception):
    """sbatch is missing or refused a script; `code` is the exit status to return."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def sbatch(script_path: Path, *options: str) -> str:
    """Submit a batch script; its job ID."""
    try:
        out = subprocess.run(["sbatch", "--parsable", *options, str(script_path)], capture_output=True, text=True)
    except FileNotFoundError:
        raise SubmitError("sbatch: not found. Submit from a SLURM login node (or set launch.launcher: local)",
                          2) from None
    if out.returncode != 0:
        raise SubmitError(f"sbatch failed ({out.returncode}): {out.stderr.strip()}\nscript: {script_path}",
                          out.returncode)
    return out.stdout.strip().split(";")[0]


def sbatch_script(runs: list[Run], workdir: Path, python: str, log_dir: Path, job_name: str,
                  max_parallel: int | None = None) -> str:
    """The batch script for one run, or for an array job over several (task k = runs[k])."""
    for r in runs:
        validate(r.cfg)
    _same_launch(runs)
    cfg = runs[0].cfg
    launch, s = cfg.launch, cfg.launch.slurm
    array = len(runs) > 1
    _sbatch_value("output_dir", str(log_dir), _PATH_IN_SBATCH)
    _sbatch_value("name", job_name, _PATH_IN_SBATCH)
    _no_control("working directory", str(workdir))
    _no_control("python", python)

    sbatch = [f"--job-name={job_name}", f"--nodes={launch.nodes}", "--ntasks-per-node=1"]
    if gpus := gpus_per_node(cfg):
        sbatch.append(f"--gpus-per-node={gpus}")
    sbatch += resource_options(cfg, s.cpus_per_task)
    if array:
        parallel = f"%{max_parallel}" if max_parallel else ""
        sbatch.append(f"--array=0-{len(runs) - 1}{parallel}")
    log_name = "slurm-%A_%a.out" if array else "slurm-%j.out"
    sbatch += [f"--signal=TERM@{s.signal_grace_s}", "--requeue", "--open-mode=append",
               f"--output={log_dir / log_name}", *s.extra_sbatch]

    q = shlex.quote
    what = f"an array of {len(runs)} runs" if array else cfg.name
    lines = ["#!/bin/bash",
             f"# Generated by `python -m launch` for {what}: change the config, not this file.",
             *(f"#SBATCH {o}" for o in sbatch),
             "set -uo pipefail  # no -e: the outcome is read from status.json, whatever srun returns",
             "", "# Job environment: launcher defaults, then launch.slurm.env.", *env_exports(job_env(cfg)),
             "", f"cd {q(str(workdir))} || exit 1", f"PYTHON={q(python)}",
             f"MAX_RESTARTS={s.max_restarts}", f"GRACE_S={s.signal_grace_s}"]
    if array:
        lines += ["case ${SLURM_ARRAY_TASK_ID:?this script is an array job: submit it with sbatch} in"]
        lines += [f"  {k}) RUN_DIR={q(str(r.run_dir))}; CONFIG={q(str(r.config_path))} ;;"
                  for k, r in enumerate(runs)]
        lines += ['  *) echo "array task $SLURM_ARRAY_TASK_ID: no such run" >&2; exit 1 ;;', "esac",
                  "# Each run keeps its own log, next to its checkpoints.",
                  'mkdir -p "$RUN_DIR/logs"',
                  'LOG="$RUN_DIR/logs/slurm-$SLURM_JOB_ID.out"',
                  'echo "array task $SLURM_ARRAY_TASK_ID is job $SLURM_JOB_ID: run dir $RUN_DIR, log $LOG"',
                  'exec >>"$LOG" 2>&1']
    else:
        lines += [f"RUN_DIR={q(str(runs[0].run_dir))}", f"CONFIG={q(str(runs[0].config_path))}"]
    lines += [
        f"READ_STATUS={q(_READ_STATUS)}",
        "",
        'restart=${SLURM_RESTART_COUNT:-0}  # unset on the first run, 1 after the first requeue',
        "# SIGTERM to this shell (scontrol requeue, the time limit) must not end the job while training",
        "# saves: with a trap, bash waits for srun to return first.",
        'trap \'echo "batch script: SIGTERM received; waiting for training to finish"\' TERM',
        "# c10d rendezvous on the first node; any node may end up with global rank 0.",
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "MASTER_PORT=$((20000 + SLURM_JOB_ID % 10000))  # per job: jobs sharing a node do not collide",
        "started=$(date +%s)",
        'echo "job $SLURM_JOB_ID (restart $restart of at most $MAX_RESTARTS) on $SLURM_JOB_NODELIST:'
        ' rendezvous $MASTER_ADDR:$MASTER_PORT, run dir $RUN_DIR"',
        "",
        "# One task per node, each a torchrun for all of that node's processes. torchrun exits 1 after a",
        "# SIGTERM while other nodes may still be saving: no --kill-on-bad-exit; --wait gives the others",
        "# 60 s once the first task has ended (rank 0, on any node, writes status.json last).",
        "# --shutdown-timeout: torchrun gives its workers the whole grace period to save after a SIGTERM.",
        f"srun --nodes={launch.nodes} --ntasks-per-node=1"
        + (f" --cpus-per-task={s.cpus_per_task}" if s.cpus_per_task else "")
        + " --kill-on-bad-exit=0 --wait=60 --label \\",
        f'  "$PYTHON" -m torch.distributed.run --nnodes={launch.nodes} '
        f'--nproc-per-node={launch.nproc_per_node} \\',
        '  --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="$SLURM_JOB_ID" \\',
        '  --max-restarts=0 --shutdown-timeout="$GRACE_S" \\',
        '  -m pipeline.train --config "$CONFIG"',
        "rc=$?",
        "",
        "# Decide from what training recorded, not from exit codes (torchrun exits 1 after a SIGTERM).",
        'read -r state step < <("$PYTHON" -I -c "$READ_STATUS" "$RUN_DIR/status.json" "$started")',
        'echo "training ended: status.json says $state at step $step (srun exit code $rc)"',
        'case $state in',
        "  complete) exit 0 ;;",
        "  preempted)",
        '    if (( restart < MAX_RESTARTS )); then',
        '      echo "requeueing (restart $((restart + 1)) of $MAX_RESTARTS):'
        ' resumes from $RUN_DIR/checkpoints/latest"',
        "      # The last action: a requeue signals this script (the trap lets it reach `exit 0`).",
        '      scontrol requeue "$SLURM_JOB_ID" && exit 0',
        '      echo "scontrol requeue failed: submit again to continue" >&2; exit 1',
        "    fi",
        '    echo "not requeueing: $restart restarts used (launch.slurm.max_restarts);'
        ' submit again to continue"',
        "    exit 1 ;;",
        '  *) echo "training did not finish ($state): see the output above" >&2; exit 1 ;;',
        "esac",
    ]
    return "\n".join(lines) + "\n"


def _manifest(cfg: RunConfig) -> Path:
    return Path(cfg.data.manifest or Path(cfg.data.prepare.output_dir) / "manifest.json")


def submit_runs(runs: list[Run], dry_run: bool = False, max_parallel: int | None = None,
                sweep_name: str = "sweep") -> int:
    """Write the batch script and sbatch it (or print it); one run is a plain job, several an array job
    named `sweep_name` whose script and array-level log live in `<output_dir>/<sweep_name>/`."""
    if not runs:
        raise ConfigError("launch: nothing to submit")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError(f"--max-parallel: must be >= 1, got {max_parallel}")
    workdir = Path.cwd()
    runs = [Run(r.cfg, workdir / r.config_path) for r in runs]  # an absolute config_path stays as it is
    first = runs[0]
    if len(runs) == 1:
        job_dir, job_name = first.run_dir, first.cfg.name
    else:
        job_name, job_dir = sweep_name, first.run_dir.parent / sweep_name
    script = sbatch_script(runs, workdir, sys.executable, job_dir / "logs", job_name, max_parallel)
    if first.cfg.train.device == "auto" and not gpus_per_node(first.cfg):
        # The launcher cannot see the compute nodes: "auto" could mean either, so it asks for no GPUs.
        print("note: no GPUs requested (train.device: auto). For GPU nodes set train.device: cuda or "
              "launch.slurm.gpus_per_node", file=sys.stderr)
    if dry_run:
        print(script, end="")
        return 0

    missing = sorted({str(_manifest(r.cfg)) for r in runs if not _manifest(r.cfg).is_file()})
    if missing:
        print(f"data: {', '.join(missing)} not found. Prepare it first (`make data CONFIG=...`): a job must "
              "not wait in the queue only to fail", file=sys.stderr)
        return 2
    for r in runs:
        (r.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        if (r.run_dir / "checkpoints" / "latest").exists():
            print(f"note: {r.run_dir} has checkpoints: {r.cfg.name} resumes from its latest one", flush=True)
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)  # sbatch cannot create the --output folder
    script_path = job_dir / "job.sbatch"
    script_path.write_text(script)
    try:
        job_id = sbatch(script_path)
    except SubmitError as e:
        print(e, file=sys.stderr)
        return e.code
    print(f"submitted job {job_id}: {script_path}", flush=True)
    if len(runs) == 1:
        print(f"  log:    {first.run_dir}/logs/slurm-{job_id}.out\n  status: {first.run_dir}/status.json")
    else:
        for k, r in enumerate(runs):
            print(f"  task {k}: {r.run_dir} (log: logs/slurm-<task job id>.out)")
    print(f"  squeue -j {job_id}; preempt gracefully (save, requeue, resume): scancel -s TERM {job_id}; "
          f"stop for good: scancel {job_id}", flush=True)
    return 0


def submit(cfg: RunConfig, config_path: Path, dry_run: bool = False) -> int:
    """Submit one run as a batch job (print the script instead with dry_run)."""
    return submit_runs([Run(cfg, config_path)], dry_run=dry_run)
