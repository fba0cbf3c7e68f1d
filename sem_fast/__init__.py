"""sem_fast: fast Semantic Equivariant Mixup (Han et al. 2023) training steps.

    from sem_fast import fused_sem_step, SEMConfig, MixDraw, StepOutput, sample_draw
"""

from sem_fast.config import SEMConfig
from sem_fast.draws import AugmentDraw, MixDraw
from sem_fast.ops import available_backends, mix_images, sem_loss
from sem_fast.sampling import sample_augment, sample_draw, sample_step_draws
from sem_fast.step import StepOutput, fused_sem_step
from sem_fast.targets import soft_targets

__version__ = "0.1.0"

__all__ = [
    "AugmentDraw", "MixDraw", "SEMConfig", "StepOutput", "available_backends", "fused_sem_step", "mix_images",
    "sample_augment", "sample_draw", "sample_step_draws", "sem_loss", "soft_targets",
]  # fmt: skip
