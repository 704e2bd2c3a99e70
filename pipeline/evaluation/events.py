"""Scalars from a run's TensorBoard event files.

A resumed run appends a new event file and re-logs the steps after its checkpoint; for each (tag, step)
the value written last (by wall time) wins, so the curve is the one the finished run actually followed.
"""

from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

Curve = tuple[list[int], list[float]]  # steps (ascending), values


def read_scalars(tb_dir: Path, tags: list[str] | None = None) -> dict[str, Curve]:
    """{tag: (steps, values)} for every scalar tag (or only `tags`) in `tb_dir`'s event files."""
    latest: dict[str, dict[int, tuple[float, float]]] = {}  # tag -> step -> (wall_time, value)
    files = sorted(Path(tb_dir).glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{tb_dir}: no TensorBoard event files")
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                if tags is not None and v.tag not in tags:
                    continue
                if not v.HasField("simple_value") and v.metadata.plugin_data.plugin_name != "scalars":
                    continue  # text, histograms, hparams
                if v.HasField("simple_value"):
                    value = v.simple_value
                else:  # EventFileLoader turns simple_value into a scalar tensor
                    value = tensor_util.make_ndarray(v.tensor).item()
                seen = latest.setdefault(v.tag, {})
                if event.step not in seen or seen[event.step][0] <= event.wall_time:
                    seen[event.step] = (event.wall_time, float(value))
    return {tag: (sorted(by_step), [by_step[s][1] for s in sorted(by_step)])
            for tag, by_step in latest.items()}
