"""Reading a batch's CSV file: UTF-8 (a BOM is skipped), comma-separated, RFC 4180 quoting
(Python's csv module), a header naming the columns in any order. Rows are read one at a
time; each comes with the line it starts on (the header is line 1; a quoted field may span
lines). Problems of the file as a whole raise BATCH_FILE_INVALID or BATCH_TOO_LARGE."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from svc_gateway.errors import BATCH_FILE_INVALID, BATCH_TOO_LARGE
from withdrawal_shared.errors import ApiError, FieldViolation, quoted

REQUIRED_COLUMNS = ("recipient_address", "amount", "token")
OPTIONAL_COLUMNS = ("client_reference", "user_ref")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
FIELD = "file"
"""How violations name the file."""


def file_invalid(description: str) -> ApiError:
    return BATCH_FILE_INVALID.error(
        f"The batch file cannot be read: {description}. Nothing was stored; fix the file "
        "and upload it again.",
        [FieldViolation(FIELD, description)],
    )


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    values: dict[str, str]  # column -> value; every known column, "" when absent
    extra: bool  # more fields than the header has columns


def _header(fields: list[str]) -> list[str]:
    names = [name.strip() for name in fields]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise file_invalid(
            f"the header names unknown columns {', '.join(quoted(n) for n in unknown[:5])}; "
            f"the columns are {', '.join(COLUMNS)}"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise file_invalid(f"the header names {', '.join(twice)} more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise file_invalid(f"the header lacks the required column(s) {', '.join(missing)}")
    return names


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _not_utf8(raw: IO[bytes]) -> str:
    """Where the file first stops being UTF-8: its byte offset and physical line (the text
    wrapper decodes blocks ahead of the rows, so the file is read again, on this error only,
    to say it exactly)."""
    raw.seek(0)
    data = raw.read()
    start = 3 if data.startswith(codecs.BOM_UTF8) else 0
    try:
        data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = 1 + len(_LINE_BREAK.findall(data[:offset].decode("utf-8", errors="replace")))
        return f"it is not UTF-8 (byte {offset} of the file, on line {line})"
    return "it is not UTF-8"  # pragma: no cover - the decoder said it was not


def read_rows(raw: IO[bytes], max_rows: int) -> Iterator[Row]:
    """The data rows of the file, in order; blank lines are skipped. Raises (as the file is
    read) BATCH_FILE_INVALID for bytes that are not UTF-8, malformed CSV, a bad header or no
    data row, and BATCH_TOO_LARGE past `max_rows` rows."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
    reader = csv.reader(text, strict=True)
    names: list[str] | None = None
    rows = 0
    previous_end = 0
    try:
        for fields in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not fields or fields == [""]:
                continue
            if names is None:
                names = _header(fields)
                continue
            rows += 1
            if rows > max_rows:
                raise BATCH_TOO_LARGE.error(
                    f"The batch file has more than {max_rows} rows; split it into smaller files.",
                    metadata={"limit_rows": str(max_rows)},
                )
            values = dict.fromkeys(COLUMNS, "")
            for name, value in zip(names, fields, strict=False):
                values[name] = value
            yield Row(line, values, len(fields) > len(names))
    except UnicodeDecodeError:
        raise file_invalid(_not_utf8(raw)) from None
    except csv.Error as exc:
        raise file_invalid(f"malformed CSV at line {reader.line_num}: {exc}") from None
    finally:
        text.detach()  # the spool stays open: it is read again to store the rows
    if names is None:
        raise file_invalid("it is empty: it needs a header and at least one row")
    if rows == 0:
        raise file_invalid("it has a header but no rows")
