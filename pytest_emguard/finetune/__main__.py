"""``python -m pytest_emguard.finetune``: see :mod:`pytest_emguard.finetune.cli`."""

from __future__ import annotations

import sys

from pytest_emguard.finetune.cli import main

if __name__ == "__main__":
    sys.exit(main())
