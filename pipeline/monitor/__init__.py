"""Training monitoring: console line, TensorBoard, optional W&B, DyT diagnostics (`monitor.py`).

`tags` (the tag names evaluation reads back) imports nothing heavy; `Monitor` is imported on first use.
"""


def __getattr__(name: str):
    if name == "Monitor":
        from .monitor import Monitor

        return Monitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Monitor"]
