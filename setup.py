"""Install sem_fast. Pure Python; works without a compiler or a GPU.

Install with ``pip install --no-build-isolation -e .`` into an environment that already has
torch (an isolated build would pull a CUDA torch onto CPU machines).
"""

from setuptools import find_packages, setup

setup(
    name="sem_fast",
    version="0.1.0",
    description="Fast Semantic Equivariant Mixup (SEM) training: fused Triton/CUDA mix and loss ops",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sem_fast", "sem_fast.*"]),
    package_data={"sem_fast.data": ["bundled/*.npz.xz", "bundled/*.md"]},
    install_requires=["torch>=2.11,<2.16", "numpy"],
    extras_require={
        "triton": ["triton>=3.6"],
        "timm": ["timm"],
        "test": ["pytest", "pytest-benchmark", "pillow"],
    },
)
