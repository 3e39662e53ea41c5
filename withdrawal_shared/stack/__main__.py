"""`python -m withdrawal_shared.stack` (what `make up` runs): see withdrawal_shared.stack."""

from __future__ import annotations

import sys

from withdrawal_shared.stack.runner import main

if __name__ == "__main__":
    sys.exit(main())
