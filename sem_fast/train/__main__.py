"""``python -m sem_fast.train ...``: the ``sem-fast`` command without the console script."""

import sys

from sem_fast.train.cli import main

sys.exit(main())
