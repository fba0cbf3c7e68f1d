"""Errors raised by the dataset readers: a missing dataset and a malformed one."""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """The files a dataset needs are not under its root; the message lists what was expected where."""

    def __init__(self, dataset: str, root: Path | str, expected: list[str], hint: str = "") -> None:
        listing = "\n".join(f"  {Path(root) / name}" for name in expected)
        super().__init__(
            f"{dataset}: dataset files not found under root {str(root)!r}; expected:\n{listing}"
            + (f"\n{hint}" if hint else "")
        )


class DatasetFormatError(ValueError):
    """A dataset file exists but is truncated, corrupt or laid out differently than expected."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
