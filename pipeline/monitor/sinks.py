"""Where rank 0's numbers go: TensorBoard (scalars, α histograms, the resolved config as text and HParams,
a Custom Scalars layout) and, optionally, Weights & Biases (the same scalars and config)."""

import importlib.util
import uuid
from pathlib import Path

import numpy as np

from pipeline.config.schema import WandbConfig

# Metrics the TensorBoard HParams view shows per run: the last value of these scalar tags.
HPARAM_METRICS = ["train/loss", "val/loss", "throughput/tokens_per_s_per_device", "throughput/mfu_pct"]


class TensorBoardSink:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._end = None

    def start(self, config_yaml: str, hparams: dict, layout: dict) -> None:
        """The resolved config (text), the run's hyper-parameters (HParams view, in this run's own directory, not
        the sub-run `add_hparams` makes) and the Custom Scalars layout."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        self.writer.add_text("config/resolved", "\n".join("    " + line for line in config_yaml.splitlines()))
        self.writer.add_text("config/run", "\n".join(["| key | value |", "|---|---|",
                                                      *[f"| {k} | {v} |" for k, v in hparams.items()]]))
        experiment, start, self._end = hparams_summary(hparams, dict.fromkeys(HPARAM_METRICS, 0.0))
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)
        self.writer.add_custom_scalars(layout)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, step)

    def histograms(self, values: dict[str, list[float]], step: int) -> None:
        for tag, v in values.items():
            self.writer.add_histogram(tag, np.asarray(v, dtype=np.float64), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def close(self) -> None:
        if self._end is not None:  # session end: HParams marks the run finished
            self.writer.file_writer.add_summary(self._end)
        self.writer.flush()
        self.writer.close()


def check_wandb(cfg: WandbConfig | None) -> bool:
    """True when W&B is to be used; a clear error when asked for but not installed (every rank checks, so none
    waits in a collective for a rank that failed)."""
    if cfg is None or cfg.mode == "disabled":
        return False
    if importlib.util.find_spec("wandb") is None:
        raise RuntimeError("logging.wandb is set but the `wandb` package is not installed: `pip install "
                           "wandb==0.31.0` (requirements/test.txt pins it), or set logging.wandb: null")
    return True


class WandbSink:
    """One W&B run per training run, resumed under the same id after a restart (kept in <run>/wandb/run_id).
    Offline mode writes <run>/wandb/offline-run-*; upload later with `wandb sync <that dir>`."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, config: dict) -> None:
        import wandb

        id_file = run_dir / "wandb" / "run_id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        if not id_file.is_file():
            id_file.write_text(uuid.uuid4().hex[:16])
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(run_dir), name=name,
                              id=id_file.read_text().strip(), resume="allow", config=config,
                              settings=wandb.Settings(console="off", silent=True))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()
