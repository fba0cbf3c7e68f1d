"""sem_fast: fast Semantic Equivariant Mixup (Han et al. 2023) training steps.

    from sem_fast import fused_sem_step, SEMConfig, MixDraw, StepOutput, sample_draw
"""

from sem_fast.backends import available_backends
from sem_fast.config import SEMConfig
from sem_fast.sampling import MixDraw, sample_draw
from sem_fast.step import StepOutput, fused_sem_step

__version__ = "0.1.0"

__all__ = ["MixDraw", "SEMConfig", "StepOutput", "available_backends", "fused_sem_step", "sample_draw"]
