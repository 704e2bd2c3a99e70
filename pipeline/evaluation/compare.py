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
from pipeline.config.rerun import config_diff
from pipeline.evaluation import plots, report
from pipeline.evaluation.common import child_env
from pipeline.evaluation.events import Curve, read_scalars
from pipeline.evaluation.schema import CompareConfig, load_compare_config
from pipeline.evaluation.stats import paired_difference, summarize
from pipeline.monitor import tags

# metric -> (TensorBoard tag, which value). train/loss points are means over each log_interval window.
METRICS = {"final_train": ("train/loss", "final"), "best_train": ("train/loss", "best"),
           "final_val": ("val/loss", "final"), "best_val": ("val/loss", "best")}
# Keys that must agree across variants: with equal seeds they fix the batches and their order.
SAME_DATA_KEYS = ("train.steps", "train.global_batch_size", "model.seq_length", "data.manifest",
                  "data.prepare")
# Keys that may change between a finished run and now without invalidating it.
REUSE_IGNORED = ("launch.launcher", "launch.slurm")
# Keys that differ between arms by construction (run name); everything else that differs is reported.
ARM_IGNORED = ("name",)
# Config keys that belong to the norm recipe; an arm differing elsewhere is a confound the report flags.
RECIPE_KEYS = ("model.norm.", "model.embedding_scale")
# Per-site curves kept from each run (besides the losses) for the report's norm and diagnostics sections.
KEPT_STATS = (tags.ALPHA, tags.RESIDUAL_RMS, tags.TANH_MEAN, "dyt_saturation_gt_")


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
    return [f"{k}: {old!r} → {new!r}" for k, old, new in config_diff(saved, wanted, REUSE_IGNORED)]


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
    if p.cfg.data.manifest_path.is_file() or p.cfg.data.prepare is None:
        return
    cmd = [sys.executable, "-m", "launch.data", p.config, *p.overrides, "--launcher", "local"]  # here, now
    print(f"== data: {p.cfg.data.manifest_path} missing, preparing it ({' '.join(cmd[1:])})", flush=True)
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
    keep = {tag: c for tag, c in curves.items() if tag in ("train/loss", "val/loss", tags.EMBEDDING_SCALE)
            or tag.startswith(KEPT_STATS)}
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
    from pipeline.model import weight_count

    manifest = load_manifest(cfg.data.manifest_path, cfg.data.external_paths_allowed)
    return {"params": weight_count(cfg, cfg.model.vocab_size or manifest.vocab_size),
            "params_note": "weights of embeddings and linear layers, norm parameters excluded",
            "unigram_reference": unigram_reference(manifest)}


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


def arms(cc: CompareConfig, configs: dict[str, dict]) -> dict:
    """Per variant, from its resolved config (`configs[label]`, one seed): the norm recipe it resolves to, and
    every config key whose value differs from the baseline's, split into the norm recipe and anything else
    (a confound)."""
    from pipeline.config.loader import build
    from pipeline.config.schema import RunConfig
    from pipeline.norms.resolved import resolved_recipe

    out = {}
    for v in cc.variants:
        diff = [{"key": k, "baseline": old, "value": new}
                for k, old, new in config_diff(configs[cc.baseline], configs[v.label]) if k not in ARM_IGNORED]
        out[v.label] = {"recipe": resolved_recipe(build(RunConfig, configs[v.label], "")),
                        "recipe_differences": [d for d in diff if d["key"].startswith(RECIPE_KEYS)],
                        "other_differences": [d for d in diff if not d["key"].startswith(RECIPE_KEYS)]}
    return out


def _kind_means(curves: dict, stat: str) -> dict[str, float]:
    """{site kind: mean over its sites of the last value} of one per-site statistic."""
    by_kind: dict[str, list[float]] = {}
    for site, (_, values) in tags.by_site(stat, curves).items():
        by_kind.setdefault(tags.site_kind(site), []).append(values[-1])
    return {kind: sum(v) / len(v) for kind, v in by_kind.items()}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def diagnostics(cc: CompareConfig, runs: list[RunResult], threshold: float) -> dict:
    """Per variant, at each run's last sample, averaged over seeds: RMS of the final norm's input and of each
    block's input (the residual stream), and for DyT-like variants the saturated fraction (|α·x| > threshold)
    and mean |tanh(α·x)| per site kind (mean over layers)."""
    out = {}
    for v in cc.variants:
        rs = [r for r in runs if r.label == v.label]
        last = [{site: c[1][-1] for site, c in tags.by_site(tags.RESIDUAL_RMS, r.curves).items()} for r in rs]
        if not all(last):
            continue
        blocks = sorted(s for s in last[0] if tags.site_kind(s) == "attention")
        entry = {"step": rs[0].curves[tags.site_tag(tags.RESIDUAL_RMS, blocks[0])][0][-1] if blocks else None,
                 "final_input_rms": _mean([x.get("final") for x in last]),
                 "block_input_rms": {s: _mean([x.get(s) for x in last]) for s in blocks}}
        for key, stat in (("saturation", tags.saturation(threshold)), ("tanh_abs_mean", tags.TANH_MEAN)):
            per_run = [_kind_means(r.curves, stat) for r in rs]
            if all(per_run):
                entry[key] = {kind: _mean([p.get(kind) for p in per_run]) for kind in per_run[0]}
        out[v.label] = entry
    return {"threshold": threshold, "variants": out}


def norm_analysis(cc: CompareConfig, runs: list[RunResult], out_dir: Path, quiet: bool) -> dict:
    """Each variant's norm analysed as its registration says (S-curves, α curves, or a note saying what was
    not analysed), on the first seed's run, each in its own process (`python -m pipeline.evaluation scurve`)
    like any evaluation job."""
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
    threshold = plans[0].cfg.logging.diagnostics.thresholds[0]
    diag = diagnostics(cc, results, threshold)
    if diag["variants"]:
        figures.append(plots.diagnostics_figure([asdict(r) for r in results], out_dir, threshold))
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
        "arms": arms(cc, {r.label: r.config for r in results if r.seed == cc.seeds[0]}),
        "diagnostics": diag,
        "norms": norms,
    }
    report.write(out_dir, report.render_compare(data), data)
    return out_dir
