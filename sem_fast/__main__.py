"""``python -m sem_fast ...``: the ``sem-fast`` command without the console script."""

import sys

from sem_fast.cli import main

sys.exit(main())
