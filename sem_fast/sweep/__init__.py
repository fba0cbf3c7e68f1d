"""``sem-fast sweep``: grid / random searches over `TrainConfig` fields and seeds, run one by one,
packed on one device, or on Ray Tune, with paper-style results tables and accuracy plots.

    from sem_fast.sweep import load_spec, run_sweep
    report = run_sweep(load_spec("examples/sweeps/demo_gamma_alpha.toml"), "sweeps/demo", parallel=2)
"""

from sem_fast.sweep.runner import SweepReport, run_sweep
from sem_fast.sweep.spec import SweepSpec, SweepSpecError, Trial, expand, load_spec, parse_spec

__all__ = ["SweepReport", "SweepSpec", "SweepSpecError", "Trial", "expand", "load_spec", "parse_spec", "run_sweep"]
