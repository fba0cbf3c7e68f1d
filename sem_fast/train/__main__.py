"""``python -m sem_fast.train ...`` (as in ``torchrun -m sem_fast.train train ...``): the ``sem-fast``
command, the same as ``python -m sem_fast``."""

import sys

from sem_fast.cli import main

if __name__ == "__main__":  # importing the module alone runs nothing
    sys.exit(main())
