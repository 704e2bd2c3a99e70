"""Fault injection for the crash / NaN / kill tests, across process boundaries, with no hook in production code.

A test asks for faults by name and passes the environment on to the processes it starts:

    launch("tiny_dyt", overrides, env=fault_env(crash_after_step=5))

`fault_env` puts tests/fault_site/ on PYTHONPATH; its sitecustomize.py runs at the start of every Python
process of that environment (launcher, torchrun workers, data_prep pool workers, forked or spawned) and calls
`install()`, which patches each requested fault's target when its module is first imported (an import hook:
nothing is imported early, and production modules read no test variable). Faults, in $DYT_FAULTS:

  crash_after_step=N        every training rank exits (SystemExit) once step N is logged, before it is saved
  nan_loss_at_step=N        the N-th training step of each process (1-based) computes a NaN loss, in any
                            engine: its model chunks' outputs are multiplied by NaN during that step
  kill_data_prep_at=P:D     SIGKILL the process group once data_prep partition P has written D documents
                            (like `kill -9` of the job: no cleanup runs)

Each patches one public seam: `pipeline.monitor.Monitor.step`, `pipeline.engine.build_engine`, megatron's
`IndexedDatasetBuilder`. A fault whose target moved fails loudly (AttributeError at import), not silently.
"""

import importlib.abc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ENV = "DYT_FAULTS"
SITE_DIR = Path(__file__).resolve().parent / "fault_site"
REPO = Path(__file__).resolve().parents[1]


def fault_env(**faults: object) -> dict[str, str]:
    """Environment entries that turn the named faults on in every process started with them."""
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(FAULTS)}")
    path = [str(SITE_DIR), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {ENV: ",".join(f"{k}={v}" for k, v in faults.items()), "PYTHONPATH": os.pathsep.join(path)}


# -- the faults: (module whose import triggers the patch, patch(module, argument)) --------------------------
def _crash_after_step(monitor: ModuleType, arg: str) -> None:
    step, n = monitor.Monitor.step, int(arg)

    def crashing(self, at: int, *args, **kwargs):
        step(self, at, *args, **kwargs)
        if at == n:
            raise SystemExit(f"fault crash_after_step={n}: exiting after step {n}, before saving it")

    monitor.Monitor.step = crashing


def _nan_loss_at_step(engines: ModuleType, arg: str) -> None:
    build, n = engines.build_engine, int(arg)

    def build_with_nan(*args, **kwargs):
        engine = build(*args, **kwargs)
        train_step, calls = engine.train_step, [0]

        def nan_step(microbatches):
            calls[0] += 1
            if calls[0] != n:
                return train_step(microbatches)
            hooks = [m.register_forward_hook(lambda mod, inp, out: out * float("nan")) for m in engine.modules]
            try:
                return train_step(microbatches)
            finally:
                for h in hooks:
                    h.remove()

        engine.train_step = nan_step
        return engine

    engines.build_engine = build_with_nan


def _kill_data_prep_at(indexed_dataset: ModuleType, arg: str) -> None:
    part, _, docs = arg.rpartition(":")
    builder, written = indexed_dataset.IndexedDatasetBuilder, [0]
    add_document = builder.add_document

    def counting(self, *args, **kwargs):
        add_document(self, *args, **kwargs)
        if Path(self.data_file.name).parent.name == part:  # data_prep writes .tmp/<partition>/<split>.bin
            written[0] += 1
            if written[0] == int(docs):
                os.killpg(os.getpgid(0), signal.SIGKILL)

    builder.add_document = counting


FAULTS: dict[str, tuple[str, Callable[[ModuleType, str], None]]] = {
    "crash_after_step": ("pipeline.monitor", _crash_after_step),
    "nan_loss_at_step": ("pipeline.engine", _nan_loss_at_step),
    "kill_data_prep_at": ("megatron.core.datasets.indexed_dataset", _kill_data_prep_at),
}


# -- installing them -------------------------------------------------------------------------------------
class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after `name` is executed, before its importer sees it."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one module, once
        for finder in sys.meta_path:  # the spec the import would have used without us
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """Patch the targets of the faults named in $DYT_FAULTS (called by tests/fault_site/sitecustomize.py)."""
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        name, _, arg = item.partition("=")
        module, patch = FAULTS[name]
        if module in sys.modules:
            patch(sys.modules[module], arg)
        else:
            sys.meta_path.insert(0, _PatchOnImport(module, lambda m, patch=patch, arg=arg: patch(m, arg)))
