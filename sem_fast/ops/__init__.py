"""Triton implementations of the two fused ops, registered as ``torch.library`` custom ops.

``sem_fast.ops.mix.mix_images`` and ``sem_fast.ops.sem_loss.sem_loss`` (same signatures and checks
as `sem_fast.reference`). Importing this package imports Triton and registers
``sem_fast::mix_images``, ``sem_fast::mix_images_backward``, ``sem_fast::sem_loss`` and
``sem_fast::sem_loss_backward``. On CPU the kernels run in Triton's interpreter, which must be
switched on (``TRITON_INTERPRET=1``) before this package is first imported.
"""

from sem_fast.ops import mix, sem_loss

__all__ = ["mix", "sem_loss"]
