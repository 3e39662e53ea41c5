"""`python -m devstack` (what `make up` runs): see devstack."""

from __future__ import annotations

import sys

from devstack.runner import main

if __name__ == "__main__":
    sys.exit(main())
