"""The two fused ops and the backends that run them.

- `functional`: the public, argument-checking `mix_images` and `sem_loss`.
- `registry`: which backend runs an op (``'reference'``, ``'triton'``, ``'native'``, ``'auto'``).
- `schema`: the ops' schemas, fake kernels and autograd, defined once for every fast backend.
- `triton/`: the Triton kernels. `native/`: the Python side of the C++/CUDA kernels in ``csrc/``.

The fast backends load on first use (`registry.get_backend`), so importing this package imports
neither Triton nor the compiled extension.
"""

from sem_fast.ops.functional import mix_images, sem_loss
from sem_fast.ops.registry import available_backends, get_backend

__all__ = ["available_backends", "get_backend", "mix_images", "sem_loss"]
