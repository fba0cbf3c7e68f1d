"""Session set-up for tests and benchmarks: run Triton kernels in the interpreter without a GPU.

TRITON_INTERPRET must be set before anything imports triton, hence here.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
