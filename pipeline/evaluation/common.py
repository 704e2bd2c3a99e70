"""Small helpers shared by the evaluation jobs."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Evaluation processes (bench, s-curve) run one process whatever layout the run trained with; checkpoints
# reshard on load (dist_checkpointing), and the model's math does not depend on the layout.
SINGLE_PROCESS = ["parallel.tp=1", "parallel.pp=1", "parallel.vpp=null", "parallel.cp=1", "parallel.sp=false",
                  "parallel.distributed_optimizer=false", "parallel.overlap_param_gather=false",
                  "parallel.overlap_grad_reduce=false", "launch.nodes=1", "launch.nproc_per_node=1"]


def child_env() -> dict[str, str]:
    """Environment for a child job (`python -m launch`, `python -m pipeline.evaluation`): this repo importable
    from any working directory."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}
