"""A batch's row problems as they are found: written to a spooled temporary file (in memory
up to `MEMORY_BYTES`, then on disk) so that a file with a million bad rows costs flat memory,
with the count, the number of distinct bad lines and the first few kept at hand. Problems
are added a chunk of lines at a time, in line order, and read back in the same order."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from svc_gateway.batches.rows import Problem

MEMORY_BYTES = 1024 * 1024
FIRST_KEPT = 20
"""Problems kept in memory for an error's details (the refusal of a REJECT_ALL file)."""


class ProblemLog:
    def __init__(self) -> None:
        self.count = 0
        self.bad_rows = 0
        self.first: list[Problem] = []
        self._file: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=MEMORY_BYTES, mode="w+", encoding="utf-8"
        )

    def add_chunk(self, problems: Iterable[Problem]) -> None:
        """The problems of lines after every line added before (any order among them)."""
        ordered = sorted(problems, key=lambda p: p.line)
        if not ordered:
            return
        self.count += len(ordered)
        self.bad_rows += len({p.line for p in ordered})
        self.first.extend(ordered[: max(0, FIRST_KEPT - len(self.first))])
        self._file.writelines(
            json.dumps([p.line, p.column, p.reason, p.message, p.client_reference]) + "\n"
            for p in ordered
        )

    def chunks(self, size: int) -> Iterator[list[Problem]]:
        """Every problem, in line order, `size` at a time."""
        self._file.flush()
        self._file.seek(0)
        chunk: list[Problem] = []
        for text in self._file:
            line, column, reason, message, reference = json.loads(text)
            chunk.append(Problem(line, column, reason, message, reference))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ProblemLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
