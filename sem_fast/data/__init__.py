"""Data: dataset readers and loaders that hand uint8 NHWC batches to the fused mix op."""

from sem_fast.data.bundled import CIFAR10_CLASSES, load_bundled

__all__ = ["CIFAR10_CLASSES", "load_bundled"]
