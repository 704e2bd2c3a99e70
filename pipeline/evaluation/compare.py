"""Loss comparison job: train every (variant, seed) of a compare config, read the curves, summarise, report.

    python -m pipeline.evaluation compare compare/tiny      (make compare CONFIG=compare/tiny)

Each run is an ordinary training run, started as `python -m launch <config> <overrides>
name=<compare>-<label>-s<seed> output_dir=<report dir>/runs train.seed=<seed>`, so it can be inspected,
resumed or launched on SLURM like any other. A run whose status.json says complete and whose saved config
equals the one it would get now is reused; a complete run trained with a different config is an error
(delete it to retrain), never silently mixed in.
"""

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pipeline.config import ConfigError, RunConfig, load_config, to_dict
from pipeline.evaluation import plots, report
from pipeline.evaluation.common import child_env
from pipeline.evaluation.events import Curve, read_scalars
from pipeline.evaluation.schema import CompareConfig, load_compare_config
from pipeline.evaluation.stats import paired_difference, summarize

# metric -> (TensorBoard tag, which value). train/loss points are means over each log_interval window.
METRICS = {"final_train": ("train/loss", "final"), "best_train": ("train/loss", "best"),
           "final_val": ("val/loss", "final"), "best_val": ("val/loss", "best")}
# Keys that must agree across variants: with equal seeds they fix the batches and their order.
SAME_DATA_KEYS = ("train.steps", "train.global_batch_size", "model.seq_length", "data.manifest",
                  "data.prepare")
# Keys that may change between a finished run and now without invalidating it.
REUSE_IGNORED = ("launch.launcher", "launch.slurm")


class CompareError(RuntimeError):
    pass


@dataclass
class RunPlan:
    label: str
    seed: int
    config: str
    overrides: list[str]
    cfg: RunConfig

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir) / self.cfg.name

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "launch", self.config, *self.overrides]


def portable(cmd: list[str]) -> list[str]:
    """The command as recorded in reports: `python` (the project's venv, from the repo root), not this
    machine's interpreter path."""
    return ["python", *cmd[1:]]


@dataclass
class RunResult:
    label: str
    seed: int
    name: str
    run_dir: str
    command: list[str]
    reused: bool
    launch_seconds: float | None
    status: dict
    config: dict
    metrics: dict[str, float | None]
    curves: dict[str, Curve] = field(default_factory=dict)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _get(cfg: RunConfig, dotted: str):
    node = to_dict(cfg)
    for part in dotted.split("."):
        node = node[part]
    return node


def plan(cc: CompareConfig, launcher: str | None = None) -> list[RunPlan]:
    """Resolve and validate every run; check the variants share data, order and token budget."""
    runs_dir = cc.runs_dir  # relative paths stay relative: the runs start in this working directory
    plans = []
    for v in cc.variants:
        for seed in cc.seeds:
            overrides = [*cc.overrides, *v.overrides, f"name={cc.name}-{v.label}-s{seed}",
                         f"output_dir={runs_dir}", f"train.seed={seed}"]
            if launcher:
                overrides.append(f"launch.launcher={launcher}")
            try:
                cfg = load_config(v.config, overrides)
            except ConfigError as e:
                raise ConfigError(f"variant {v.label} (config {v.config}, seed {seed}): {e}") from None
            plans.append(RunPlan(v.label, seed, v.config, overrides, cfg))
    for key in SAME_DATA_KEYS:
        values = {p.label: _get(p.cfg, key) for p in plans}
        if len({json.dumps(x, sort_keys=True) for x in values.values()}) > 1:
            shown = ", ".join(f"{label}: {value!r}" for label, value in values.items())
            raise ConfigError(f"{key}: variants differ ({shown}); a comparison needs the same data, "
                              "batches and token budget for every variant (set it in the compare config's "
                              "`overrides`)")
    return plans


def _config_diff(saved: dict, wanted: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(wanted)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(REUSE_IGNORED))
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in keys]


def read_status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {"state": "missing", "step": 0}


def is_reusable(p: RunPlan) -> bool:
    """True for a complete run with the same config; raises for a complete run with a different one."""
    if read_status(p.run_dir).get("state") != "complete":
        return False
    saved = yaml.safe_load((p.run_dir / "config.yaml").read_text())
    wanted = yaml.safe_load(yaml.safe_dump(to_dict(p.cfg), sort_keys=False))  # same types as the saved file
    diff = _config_diff(saved, wanted)
    if diff:
        raise CompareError(f"run {p.run_dir} is complete but was trained with a different config ("
                           f"{'; '.join(diff[:5])}{' …' if len(diff) > 5 else ''}); delete it to retrain, "
                           "or change the compare config back")
    return True


def ensure_data(p: RunPlan) -> None:
    """Build the runs' (shared) data set when its manifest is missing, as `make data` would; a manifest that
    exists is left to training's own checks (tokenizer hash, shard files)."""
    from pipeline.train import manifest_path

    if manifest_path(p.cfg).is_file() or p.cfg.data.prepare is None:
        return
    cmd = [sys.executable, "-m", "launch.data", p.config, *p.overrides, "--launcher", "local"]  # here, now
    print(f"== data: {manifest_path(p.cfg)} missing, preparing it ({' '.join(cmd[1:])})", flush=True)
    if subprocess.run(cmd, env=child_env()).returncode != 0:
        raise CompareError(f"data preparation failed: {' '.join(cmd)}")


def submitted(p: RunPlan) -> bool:
    """A SLURM job was submitted for this run earlier (the launcher writes <run>/job.sbatch): do not submit
    it twice while it waits or runs."""
    return p.cfg.launch.launcher == "slurm" and (p.run_dir / "job.sbatch").is_file()


def execute(p: RunPlan, quiet: bool = False) -> float:
    """`python -m launch ...` for one run; output streamed (unless quiet) and kept in <run>/launch.log."""
    p.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = p.run_dir / "launch.log"
    t0 = time.time()
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(p.command) + "\n")
        proc = subprocess.Popen(p.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=child_env())
        for line in proc.stdout:
            log.write(line)
            log.flush()  # so `tail -f <run>/launch.log` follows the run
            if not quiet:
                print(f"[{p.name}] {line}", end="", flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise CompareError(f"run {p.name} failed (exit {rc}); full log {log_path}; last lines:\n{tail}")
    return time.time() - t0


def run_metrics(curves: dict[str, Curve]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for metric, (tag, which) in METRICS.items():
        values = curves.get(tag, ([], []))[1]
        out[metric] = (values[-1] if which == "final" else min(values)) if values else None
    return out


def collect(p: RunPlan, reused: bool, seconds: float | None) -> RunResult:
    status = read_status(p.run_dir)
    curves = read_scalars(p.run_dir / "tensorboard")
    keep = {tag: c for tag, c in curves.items() if tag in ("train/loss", "val/loss")
            or tag.startswith("norm/")}
    steps = curves.get("train/loss", ([], []))[0]
    if not steps or steps[-1] != p.cfg.train.steps:
        raise CompareError(f"run {p.name}: train/loss ends at step {steps[-1] if steps else None}, expected "
                           f"{p.cfg.train.steps}; the event files do not match status.json")
    return RunResult(p.label, p.seed, p.name, str(p.run_dir), portable(p.command), reused, seconds, status,
                     to_dict(p.cfg), run_metrics(curves), keep)


def data_facts(cfg: RunConfig) -> dict:
    """What the report needs from the shared data and model shape: parameter count and the unigram
    reference loss (`pipeline.evaluation.unigram`)."""
    from pipeline import runtime  # noqa: F401  (first: it quiets megatron's import-time notices)
    from pipeline.data import load_manifest
    from pipeline.evaluation.unigram import unigram_reference
    from pipeline.train import manifest_path

    manifest = load_manifest(manifest_path(cfg))
    return {"params": count_params(cfg, cfg.model.vocab_size or manifest.vocab_size),
            "params_note": "weights of embeddings and linear layers, norm parameters excluded",
            "unigram_reference": unigram_reference(manifest)}


def count_params(cfg: RunConfig, vocab_size: int) -> int:
    """Weights of the embeddings and linear layers (norm parameters, a few per layer, are left out)."""
    from pipeline.model import ffn_hidden_size, padded_vocab_size

    m = cfg.model
    h, f, groups = m.hidden_size, ffn_hidden_size(cfg), m.num_query_groups or m.num_attention_heads
    vocab = padded_vocab_size(vocab_size, cfg)
    qkv = h * (h + 2 * groups * h // m.num_attention_heads)
    per_layer = qkv + h * h + 3 * h * f  # qkv, proj, SwiGLU fc1 (2f) + fc2 (f)
    return m.num_layers * per_layer + vocab * h * (2 if m.untie_embeddings else 1)


def analyze(cc: CompareConfig, runs: list[RunResult]) -> tuple[dict, dict]:
    """Per-variant mean ± std over seeds, and paired differences to the baseline (by seed)."""
    by = {(r.label, r.seed): r for r in runs}
    summary: dict = {}
    differences: dict = {}
    for v in cc.variants:
        summary[v.label] = {}
        for metric in METRICS:
            values = [by[v.label, s].metrics[metric] for s in cc.seeds]
            if any(x is None for x in values):
                continue
            summary[v.label][metric] = {**asdict(summarize(values)), "values": values}
        if v.label == cc.baseline:
            continue
        differences[v.label] = {}
        for metric in summary[v.label]:
            base = [by[cc.baseline, s].metrics[metric] for s in cc.seeds]
            if any(x is None for x in base):
                continue
            variant = summary[v.label][metric]["values"]
            differences[v.label][metric] = paired_difference(variant, base).as_dict()
    return summary, differences


def norm_analysis(cc: CompareConfig, runs: list[RunResult], out_dir: Path, quiet: bool) -> dict:
    """S-curves for each LN/RMSNorm variant and α curves for each DyT-like one, on the first seed's run,
    each in its own process (`python -m pipeline.evaluation scurve`) like any evaluation job."""
    out = {}
    for v in cc.variants:
        run = next(r for r in runs if r.label == v.label and r.seed == cc.seeds[0])
        dest = out_dir / "norms" / run.name
        cmd = [sys.executable, "-m", "pipeline.evaluation", "scurve", run.run_dir, "--out", str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
        if proc.returncode != 0:
            raise CompareError(f"norm analysis of {run.name} failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        if not quiet:
            print(proc.stdout, end="", flush=True)
        # The analysis' own results.json carries its (portable) command.
        out[v.label] = {"run": run.name, "dir": str(dest.relative_to(out_dir)),
                        **json.loads((dest / "results.json").read_text())}
    return out


def run_compare(name: str, launcher: str | None = None, train: bool = True, quiet: bool = False,
                command: str | None = None, make_command: str | None = None) -> Path:
    """The whole job; returns the report directory. `train=False` only reports on existing complete runs."""
    cc = load_compare_config(name)
    plans = plan(cc, launcher)
    reusable = {p.name: is_reusable(p) for p in plans}  # before any training: stale runs fail fast
    if train and not all(reusable.values()):
        ensure_data(plans[0])  # every variant reads the same data (checked by `plan`)
    results, pending = [], []
    for p in plans:
        reused, seconds = reusable[p.name], None
        if not reused:
            if not train or submitted(p):
                pending.append(p.name)
                continue
            print(f"== {p.name}: training ({' '.join(p.command[1:])})", flush=True)
            seconds = execute(p, quiet)
        elif not quiet:
            print(f"== {p.name}: complete, reused", flush=True)
        if read_status(p.run_dir).get("state") != "complete":
            pending.append(p.name)  # e.g. submitted to SLURM and not finished yet
            continue
        results.append(collect(p, reused, seconds))
    if pending:
        raise CompareError(f"{len(pending)} run(s) not complete: {', '.join(pending)}. If they were "
                           "submitted to SLURM, rerun the same command when they finish (complete runs are "
                           "reused; delete <run>/job.sbatch to submit a failed one again)")

    out_dir = cc.report_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, differences = analyze(cc, results)
    facts = data_facts(plans[0].cfg)
    figures = plots.compare_figures(cc.baseline, [asdict(r) for r in results], out_dir,
                                    facts["unigram_reference"])
    norms = norm_analysis(cc, results, out_dir, quiet)
    data = {
        "kind": "compare",
        "command": command or f"python -m pipeline.evaluation compare {name}",
        "make_command": make_command,
        "environment": report.environment(),
        "compare_config": asdict(cc),
        **facts,
        "runs": [asdict(r) for r in results],
        "summary": summary,
        "differences": differences,
        "figures": figures,
        "norms": norms,
    }
    report.write(out_dir, report.render_compare(data), data)
    return out_dir
