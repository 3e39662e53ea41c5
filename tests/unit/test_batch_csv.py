"""The batch file's reader (`svc_gateway.batches.csv_file`), the upload's spool and one row's
checks (`svc_gateway.batches.rows`) on their own: no database, no gateway.

A row's line is the physical line of the file it starts on (the header is line 1 when the
file starts with it; blank lines count; a quoted field spanning lines makes the next row's
line jump by as many)."""

from __future__ import annotations

import io

import pytest

from svc_gateway.batches.csv_file import Row, read_rows
from svc_gateway.batches.rows import check_row, row_request_id
from svc_gateway.batches.spool import Spool
from withdrawal_shared.db.reference import ChainInfo, ReferenceData, TokenInfo
from withdrawal_shared.errors import ApiError

GOOD = "0x52908400098527886e0f7030069857d2e4169ee7"  # lowercase: no checksum to match
CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55
BAD_CHECKSUM = "0x52908400098527886e0F7030069857D2E4169EE7"
USDC_CONTRACT = "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"
HOT_WALLET = "0x1111111111111111111111111111111111111111"
BATCH = "01J0000000000000000000000A"

USDC = TokenInfo(1, "polygon", "USDC", USDC_CONTRACT, 6, 1_000_000 * 10**6, True)
OLD = TokenInfo(2, "polygon", "OLD", None, 6, 10**12, False)
REFERENCE = ReferenceData(
    chains={"polygon": ChainInfo("polygon", 137, "POL", 18, 64, True)},
    tokens={("polygon", "USDC"): USDC, ("polygon", "OLD"): OLD},
    tokens_by_id={1: USDC, 2: OLD},
    system_addresses=frozenset({USDC_CONTRACT, HOT_WALLET}),
)


def rows(content: bytes | str, max_rows: int = 100) -> list[Row]:
    raw = content.encode() if isinstance(content, str) else content
    return list(read_rows(io.BytesIO(raw), max_rows))


def lines(content: bytes | str) -> list[int]:
    return [r.line for r in rows(content)]


def file_error(content: bytes | str, max_rows: int = 100) -> tuple[str, str]:
    with pytest.raises(ApiError) as caught:
        rows(content, max_rows)
    return caught.value.reason, caught.value.message


def problems(line: str, header: str = "recipient_address,amount,token") -> list[tuple[str, str]]:
    (row,) = rows(f"{header}\r\n{line}\r\n")
    new, found = check_row(row, BATCH, REFERENCE)
    assert (new is None) == bool(found)
    return [(p.column, p.reason) for p in found]


# ---------------------------------------------------------------------- reading


def test_rows_read_with_values_by_column_and_lines_from_the_header() -> None:
    read = rows(f"recipient_address,amount,token\r\n{GOOD},1.5,USDC\r\n{GOOD},2,USDC\r\n")
    assert [(r.line, r.values["amount"], r.extra) for r in read] == [
        (2, "1.5", False),
        (3, "2", False),
    ]
    # Optional columns absent from the header are empty.
    assert read[0].values == {
        "recipient_address": GOOD,
        "amount": "1.5",
        "token": "USDC",
        "client_reference": "",
        "user_ref": "",
    }


def test_a_byte_order_mark_is_skipped() -> None:
    read = rows(b"\xef\xbb\xbfrecipient_address,amount,token\r\n" + f"{GOOD},1,USDC\r\n".encode())
    assert [(r.line, r.values["recipient_address"]) for r in read] == [(2, GOOD)]


def test_columns_in_any_order_with_optional_ones_and_spaces_around_names() -> None:
    read = rows(
        f"user_ref, token ,client_reference,amount,recipient_address\nu-1,USDC,inv-1,3,{GOOD}\n"
    )
    assert read[0].values == {
        "recipient_address": GOOD,
        "amount": "3",
        "token": "USDC",
        "client_reference": "inv-1",
        "user_ref": "u-1",
    }


def test_rfc4180_quoting_commas_doubled_quotes_and_line_endings() -> None:
    read = rows(
        "recipient_address,amount,token,client_reference\n"
        f'"{GOOD}","1","USDC","inv, ""A"""\r'  # a lone CR ends a line too
        f"{GOOD},2,USDC,plain"  # no final line break
    )
    assert [(r.line, r.values["client_reference"]) for r in read] == [
        (2, 'inv, "A"'),
        (3, "plain"),
    ]


def test_a_row_s_line_is_the_physical_line_it_starts_on() -> None:
    content = (
        "recipient_address,amount,token,client_reference\r\n"  # 1
        f'{GOOD},1,USDC,"two\r\nlines"\r\n'  # 2-3
        "\r\n"  # 4: blank, skipped
        f'{GOOD},"2\n",USDC,"three\nphysical\nlines"\r\n'  # 5-8
        f"{GOOD},3,USDC,after\r\n"  # 9
    )
    read = rows(content)
    assert [r.line for r in read] == [2, 5, 9]
    assert read[0].values["client_reference"] == "two\r\nlines"
    # A reference cannot hold a line break; the amount's trailing one is whitespace.
    assert [
        [(p.line, p.column, p.reason) for p in check_row(r, BATCH, REFERENCE)[1]] for r in read
    ] == [
        [(2, "client_reference", "INVALID_CLIENT_REFERENCE")],
        [(5, "client_reference", "INVALID_CLIENT_REFERENCE")],
        [],
    ]


def test_blank_lines_before_the_header_and_between_rows_are_skipped_but_counted() -> None:
    assert lines(f"\r\n\r\nrecipient_address,amount,token\r\n\r\n{GOOD},1,USDC\r\n\r\n") == [5]


def test_more_fields_than_the_header_is_a_row_problem_fewer_are_empty_values() -> None:
    read = rows(f"recipient_address,amount,token\n{GOOD},1,USDC,extra\n{GOOD},1\n")
    assert [r.extra for r in read] == [True, False]
    assert read[1].values["token"] == ""


# ---------------------------------------------------------------------- file problems


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "it is empty"),
        (b"\r\n\r\n", "it is empty"),
        (b"\xef\xbb\xbf", "it is empty"),
        (b"recipient_address,amount,token\r\n", "a header but no rows"),
        (b"recipient_address,amount,token\r\n\r\n", "a header but no rows"),
        (b"amount,token\r\n1,USDC\r\n", "lacks the required column(s) recipient_address"),
        (b"recipient_address,token\r\n", "lacks the required column(s) amount"),
        (b"recipient_address,amount,token,colour\r\n", "unknown columns 'colour'"),
        (b"Recipient_Address,amount,token\r\n", "unknown columns 'Recipient_Address'"),
        (b"recipient_address,amount,token,amount\r\n", "names amount more than once"),
        (b'recipient_address,amount,token\r\n"0x1"x,1,USDC\r\n', "malformed CSV at line 2"),
        (b'recipient_address,amount,token\r\n"0x1,1,USDC\r\n', "malformed CSV"),
    ],
)
def test_file_problems_are_batch_file_invalid(content: bytes, says: str) -> None:
    reason, message = file_error(content)
    assert reason == "BATCH_FILE_INVALID"
    assert says in message, message
    assert "Nothing was stored" in message


def test_bytes_that_are_not_utf8_name_their_offset_and_line() -> None:
    content = b"recipient_address,amount,token\r\n" + f"{GOOD},1,USDC\r\n".encode() * 3
    content += b"0x\xff\xfe,1,USDC\r\n"
    reason, message = file_error(content)
    assert reason == "BATCH_FILE_INVALID"
    offset = content.index(b"\xff")
    assert f"byte {offset} of the file, on line 5" in message
    # Latin-1 text (an accented reference) deep in a file larger than a decoding block.
    big = b"recipient_address,amount,token,client_reference\n"
    big += f"{GOOD},1,USDC,ok\n".encode() * 1000 + f"{GOOD},1,USDC,caf".encode() + b"\xe9\n"
    assert "on line 1002)" in file_error(big, max_rows=2000)[1]


def test_more_rows_than_allowed_is_batch_too_large() -> None:
    content = "recipient_address,amount,token\r\n" + f"{GOOD},1,USDC\r\n" * 4
    assert len(rows(content, max_rows=4)) == 4
    reason, message = file_error(content, max_rows=3)
    assert reason == "BATCH_TOO_LARGE"
    assert "more than 3 rows" in message
    # Blank lines are not rows.
    assert len(rows(content + "\r\n\r\n", max_rows=4)) == 4


def test_more_bytes_than_allowed_is_batch_too_large_as_the_upload_arrives() -> None:
    with Spool(max_bytes=10) as spool:
        spool.write(b"12345")
        spool.write(b"67890")
        assert spool.size == 10
        with pytest.raises(ApiError) as caught:
            spool.write(b"1")
    assert caught.value.reason == "BATCH_TOO_LARGE"
    assert "larger than 10 bytes" in caught.value.message


def test_the_spool_keeps_large_uploads_in_a_file_and_rereads_them() -> None:
    content = ("recipient_address,amount,token\r\n" + f"{GOOD},1,USDC\r\n" * 40_000).encode()
    with Spool(max_bytes=len(content)) as spool:
        for i in range(0, len(content), 65_536):
            spool.write(content[i : i + 65_536])
        assert len(list(read_rows(spool.reopen(), 50_000))) == 40_000
        assert len(list(read_rows(spool.reopen(), 50_000))) == 40_000  # read twice


# ---------------------------------------------------------------------- one row's checks


def test_a_good_row_is_a_withdrawal_with_the_row_s_request_id() -> None:
    (row,) = rows(
        f"recipient_address,amount,token,client_reference,user_ref\n"
        f" {CHECKSUMMED} , 12.5 , USDC ,inv-1,user-1\n"
    )
    new, found = check_row(row, BATCH, REFERENCE)
    assert found == [] and new is not None
    assert (new.request_id, new.recipient, new.amount, new.token.symbol) == (
        f"batches/{BATCH}/2",
        GOOD,
        12_500_000,
        "USDC",
    )
    assert (new.client_reference, new.user_ref) == ("inv-1", "user-1")
    assert row_request_id(BATCH, 2) == new.request_id


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0x123,1,USDC", [("recipient_address", "INVALID_ADDRESS")]),
        (f"{BAD_CHECKSUM},1,USDC", [("recipient_address", "INVALID_ADDRESS")]),
        ("0x" + "0" * 40 + ",1,USDC", [("recipient_address", "INVALID_ADDRESS")]),
        (",1,USDC", [("recipient_address", "INVALID_ADDRESS")]),
        (f"{HOT_WALLET},1,USDC", [("recipient_address", "SYSTEM_ADDRESS")]),
        (f"{USDC_CONTRACT},1,USDC", [("recipient_address", "SYSTEM_ADDRESS")]),
        (f"{GOOD},1.1234567,USDC", [("amount", "INVALID_AMOUNT")]),
        (f"{GOOD},0,USDC", [("amount", "INVALID_AMOUNT")]),
        (f"{GOOD},-1,USDC", [("amount", "INVALID_AMOUNT")]),
        (f"{GOOD},1e3,USDC", [("amount", "INVALID_AMOUNT")]),
        (f"{GOOD},,USDC", [("amount", "INVALID_AMOUNT")]),
        (f"{GOOD},1000000.000001,USDC", [("amount", "AMOUNT_ABOVE_MAXIMUM")]),
        (f"{GOOD},1,XYZ", [("token", "UNKNOWN_TOKEN")]),
        (f"{GOOD},1,usdc", [("token", "UNKNOWN_TOKEN")]),
        (f"{GOOD},1,OLD", [("token", "TOKEN_DISABLED")]),
        (f"{GOOD},1,", [("token", "INVALID_TOKEN")]),
        (f"{GOOD},1,USDC,extra", [("", "TOO_MANY_FIELDS")]),
        (
            "nope,0,USDC",
            [("recipient_address", "INVALID_ADDRESS"), ("amount", "INVALID_AMOUNT")],
        ),
    ],
)
def test_row_problems_have_a_column_and_a_reason(
    line: str, expected: list[tuple[str, str]]
) -> None:
    assert problems(line) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("x" * 129 + ",", [("client_reference", "INVALID_CLIENT_REFERENCE")]),
        ('"tab\there",', [("client_reference", "INVALID_CLIENT_REFERENCE")]),
        ("inv-1,-starts-with-dash", [("user_ref", "INVALID_USER_REF")]),
        ("inv-1,has space", [("user_ref", "INVALID_USER_REF")]),
        ("x" * 128 + ",u@example", []),
    ],
)
def test_reference_problems(values: str, expected: list[tuple[str, str]]) -> None:
    header = "recipient_address,amount,token,client_reference,user_ref"
    assert problems(f"{GOOD},1,USDC,{values}", header) == expected


def test_a_problem_carries_the_row_s_line_message_and_reference() -> None:
    (row,) = rows(f"client_reference,recipient_address,amount,token\r\n\r\ninv-9,{GOOD},0,USDC\r\n")
    _, found = check_row(row, BATCH, REFERENCE)
    assert [(p.line, p.client_reference) for p in found] == [(3, "inv-9")]
    assert "greater than zero" in found[0].message or "zero" in found[0].message
