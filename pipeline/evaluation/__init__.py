"""Evaluation jobs: loss comparison across norm variants and seeds, wall-clock benchmarks, S-curve analysis,
and the markdown/JSON reports they write to `reports/<name>/`.

    python -m pipeline.evaluation compare compare/tiny       # make compare CONFIG=compare/tiny
    python -m pipeline.evaluation bench tiny_dyt             # make bench-model CONFIG=tiny_dyt
    python -m pipeline.evaluation scurve runs/tiny_rmsnorm   # S-curves (LN/RMSNorm) or α curves (DyT)
"""
