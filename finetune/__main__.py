"""``python -m finetune``: see :mod:`finetune.cli`."""

from __future__ import annotations

import sys

from finetune.cli import main

if __name__ == "__main__":
    sys.exit(main())
