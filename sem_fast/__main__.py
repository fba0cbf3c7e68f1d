"""``python -m sem_fast ...``: the ``sem-fast`` command without the console script."""

import sys

from sem_fast.cli import main

if __name__ == "__main__":  # importing the module alone runs nothing
    sys.exit(main())
