"""The upload of a batch file, spooled: in memory up to `MEMORY_BYTES`, then a temporary file,
so a large file costs flat memory and can be read twice (validate, then store)."""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO

from svc_gateway.errors import BATCH_TOO_LARGE

MEMORY_BYTES = 1024 * 1024


class Spool:
    """The file's bytes as they arrive, their SHA-256 and size; BATCH_TOO_LARGE past
    `max_bytes`. Close it (or use it as a context manager) to delete the file."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=MEMORY_BYTES)  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise BATCH_TOO_LARGE.error(
                f"The batch file is larger than {self.max_bytes} bytes; split it into smaller "
                "files.",
                metadata={"limit_bytes": str(self.max_bytes)},
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def reopen(self) -> IO[bytes]:
        """The bytes from the start (the same file object, rewound)."""
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
