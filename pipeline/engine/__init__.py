"""Training engines behind one interface, chosen by the config key `engine`.

Importing this package imports neither megatron nor deepspeed: each engine module imports its framework,
and is itself imported only when `build_engine` picks it. A new engine is one module here plus its name in
ENGINES (and in the config schema's `engine` choices).
"""

import importlib

from .base import Engine, StepResult

ENGINES = {
    "megatron": "pipeline.engine.megatron:MegatronEngine",
    "deepspeed": "pipeline.engine.deepspeed:DeepSpeedEngine",
}


def build_engine(cfg, runtime, vocab_size: int) -> Engine:
    """The engine `cfg.engine` names, with its model built (same model and initial weights for every engine)."""
    module, cls = ENGINES[cfg.engine].split(":")
    return getattr(importlib.import_module(module), cls)(cfg, runtime, vocab_size)


__all__ = ["ENGINES", "Engine", "StepResult", "build_engine"]
