"""WithdrawalService over gRPC against a real gateway on MariaDB and on SQLite, with Redis."""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest
from eth_utils.address import to_checksum_address
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, fresh_address, rich_error
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.transitions import verify_audit_chain
from withdrawal_shared.ids import new_ulid

STATE = withdrawal_pb2.State


def count_withdrawals(gateway: RunningGateway, partner: Partner) -> int:
    with gateway.server.store.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.partner_id == partner.id)
            )
            or 0
        )


def test_create_get_round_trip(gateway: RunningGateway, partner_a: Partner) -> None:
    recipient = fresh_address()
    created = gateway.stub.CreateWithdrawal(
        create_request(amount="12.5", recipient=recipient, client_reference="inv-1"),
        metadata=partner_a.metadata,
    )
    assert created.name.startswith("withdrawals/")
    assert created.state == STATE.STATE_RECEIVED
    assert created.amount == "12.5"
    assert created.recipient_address == recipient
    assert created.chain == "polygon" and created.token == "USDC"
    assert created.priority == withdrawal_pb2.PRIORITY_STANDARD
    assert created.client_reference == "inv-1"
    assert created.version == 1
    fetched = gateway.stub.GetWithdrawal(
        withdrawal_pb2.GetWithdrawalRequest(name=created.name), metadata=partner_a.metadata
    )
    assert fetched == created
    # Stored as integer base units with an audit row whose hash chain verifies.
    with gateway.server.store.sessions() as session:
        row = session.get(Withdrawal, created.name.split("/")[1])
        assert row is not None and row.amount == 12_500_000
        assert verify_audit_chain(session, row.id)


def test_amount_formats_round_trip(gateway: RunningGateway, partner_a: Partner) -> None:
    for text, base_units in (("0.000001", 1), ("1", 1_000_000), ("999999.999999", 999999999999)):
        created = gateway.stub.CreateWithdrawal(
            create_request(amount=text), metadata=partner_a.metadata
        )
        assert created.amount == text
        with gateway.server.store.sessions() as session:
            row = session.get(Withdrawal, created.name.split("/")[1])
            assert row is not None and row.amount == base_units


def test_same_request_id_returns_the_original(gateway: RunningGateway, partner_a: Partner) -> None:
    request = create_request()
    first = gateway.stub.CreateWithdrawal(request, metadata=partner_a.metadata)
    second = gateway.stub.CreateWithdrawal(request, metadata=partner_a.metadata)
    assert first == second


def test_twenty_concurrent_repeats_create_one_withdrawal(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    request = create_request()
    before = count_withdrawals(gateway, partner_a)
    names: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        try:
            barrier.wait()
            names.append(gateway.stub.CreateWithdrawal(request, metadata=partner_a.metadata).name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(names) == 20 and len(set(names)) == 1
    assert count_withdrawals(gateway, partner_a) == before + 1


def test_reused_request_id_with_another_body_is_already_exists(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    request_id = str(uuid.uuid4())
    gateway.stub.CreateWithdrawal(
        create_request(request_id=request_id, amount="1"), metadata=partner_a.metadata
    )
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(
            create_request(request_id=request_id, amount="2"), metadata=partner_a.metadata
        )
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"


def test_request_id_is_scoped_per_partner(
    gateway: RunningGateway, partner_a: Partner, partner_b: Partner
) -> None:
    request_id = str(uuid.uuid4())
    a = gateway.stub.CreateWithdrawal(
        create_request(request_id=request_id), metadata=partner_a.metadata
    )
    b = gateway.stub.CreateWithdrawal(
        create_request(request_id=request_id), metadata=partner_b.metadata
    )
    assert a.name != b.name


ZERO = "0x" + "0" * 40
GOOD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"recipient": "0x1234"}, "withdrawal.recipient_address"),
        ({"recipient": "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"}, "withdrawal.recipient_address"),
        ({"recipient": BAD_CHECKSUM}, "withdrawal.recipient_address"),
        ({"recipient": ZERO}, "withdrawal.recipient_address"),
        ({"amount": "0"}, "withdrawal.amount"),
        ({"amount": "0.000000"}, "withdrawal.amount"),
        ({"amount": "-5"}, "withdrawal.amount"),
        ({"amount": "1.1234567"}, "withdrawal.amount"),
        ({"amount": "1e6"}, "withdrawal.amount"),
        ({"amount": "01.5"}, "withdrawal.amount"),
        ({"amount": ""}, "withdrawal.amount"),
        ({"amount": "2000000"}, "withdrawal.amount"),
        ({"token": "DOGE"}, "withdrawal.token"),
        ({"token": ""}, "withdrawal.token"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_invalid_input_is_rejected_and_nothing_stored(
    gateway: RunningGateway, partner_a: Partner, overrides: dict[str, str], field: str
) -> None:
    before = count_withdrawals(gateway, partner_a)
    request = create_request()
    if "request_id" in overrides:
        request.request_id = overrides["request_id"]
    if "recipient" in overrides:
        request.withdrawal.recipient_address = overrides["recipient"]
    if "amount" in overrides:
        request.withdrawal.amount = overrides["amount"]
    if "token" in overrides:
        request.withdrawal.token = overrides["token"]
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(request, metadata=partner_a.metadata)
    code, info, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in fields
    assert info.reason
    assert count_withdrawals(gateway, partner_a) == before


def test_valid_checksum_and_lowercase_are_accepted(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    for recipient in (GOOD_CHECKSUM, GOOD_CHECKSUM.lower()):
        created = gateway.stub.CreateWithdrawal(
            create_request(recipient=recipient), metadata=partner_a.metadata
        )
        assert created.recipient_address == GOOD_CHECKSUM.lower()


def test_system_addresses_are_refused(gateway: RunningGateway, partner_a: Partner) -> None:
    usdc = gateway.server.store.reference.get().tokens[("polygon", "USDC")].contract_address
    assert usdc
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CreateWithdrawal(create_request(recipient=usdc), metadata=partner_a.metadata)
    code, _, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["withdrawal.recipient_address"]


def test_missing_and_unknown_keys_are_unauthenticated(gateway: RunningGateway) -> None:
    for metadata in (
        (),
        (("authorization", "Bearer awk_00000000_nope"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer not-a-key"),),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.CreateWithdrawal(create_request(), metadata=metadata)
        code, info, _ = rich_error(caught.value)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert info.reason == "UNAUTHENTICATED"


def test_other_partners_withdrawal_is_not_found(
    gateway: RunningGateway, partner_a: Partner, partner_b: Partner
) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    for call, request in (
        (gateway.stub.GetWithdrawal, withdrawal_pb2.GetWithdrawalRequest(name=created.name)),
        (
            gateway.stub.CancelWithdrawal,
            withdrawal_pb2.CancelWithdrawalRequest(name=created.name),
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, metadata=partner_b.metadata)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(page_size=1000), metadata=partner_b.metadata
    )
    assert created.name not in {w.name for w in listed.withdrawals}
    # And it was not cancelled by the attempt.
    again = gateway.stub.GetWithdrawal(
        withdrawal_pb2.GetWithdrawalRequest(name=created.name), metadata=partner_a.metadata
    )
    assert again.state == STATE.STATE_RECEIVED


def test_malformed_names_are_invalid(gateway: RunningGateway, partner_a: Partner) -> None:
    for name in ("", "withdrawals/", "withdrawal/01abc", "withdrawals/../etc"):
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.GetWithdrawal(
                withdrawal_pb2.GetWithdrawalRequest(name=name), metadata=partner_a.metadata
            )
        code, _, fields = rich_error(caught.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert fields == ["name"]


def test_list_pages_and_filters(gateway: RunningGateway) -> None:
    partner = gateway.add_partner(f"lister-{uuid.uuid4().hex[:6]}")
    created = [
        gateway.stub.CreateWithdrawal(
            create_request(client_reference=f"ref-{i}"), metadata=partner.metadata
        )
        for i in range(7)
    ]
    gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=created[2].name), metadata=partner.metadata
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(page_size=3, page_token=token),
            metadata=partner.metadata,
        )
        pages += 1
        seen.extend(w.name for w in page.withdrawals)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [w.name for w in reversed(created)]  # newest first, no repeats, no gaps

    cancelled = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(filter="state = CANCELLED"),
        metadata=partner.metadata,
    )
    assert [w.name for w in cancelled.withdrawals] == [created[2].name]
    received = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(filter="state = RECEIVED OR state = QUEUED"),
        metadata=partner.metadata,
    )
    assert len(received.withdrawals) == 6
    by_reference = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(
            filter='state = RECEIVED AND client_reference = "ref-4"'
        ),
        metadata=partner.metadata,
    )
    assert [w.name for w in by_reference.withdrawals] == [created[4].name]

    for bad_filter in ("state = NOPE", "fee > 5", "state =", "amount > five"):
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.ListWithdrawals(
                withdrawal_pb2.ListWithdrawalsRequest(filter=bad_filter),
                metadata=partner.metadata,
            )
        code, _, fields = rich_error(caught.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["filter"]
    first = gateway.stub.ListWithdrawals(
        withdrawal_pb2.ListWithdrawalsRequest(page_size=1), metadata=partner.metadata
    )
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(
                page_size=1, page_token=first.next_page_token, filter="state = RECEIVED"
            ),
            metadata=partner.metadata,
        )
    assert rich_error(caught.value)[2] == ["page_token"]


def test_list_filters_by_recipient_amount_time_user_and_token(gateway: RunningGateway) -> None:
    partner = gateway.add_partner(f"finder-{uuid.uuid4().hex[:6]}")
    recipient = fresh_address()
    small = gateway.stub.CreateWithdrawal(
        create_request(amount="1.5", recipient=recipient), metadata=partner.metadata
    )
    middle = gateway.stub.CreateWithdrawal(
        create_request(amount="20", recipient=to_checksum_address(recipient)),
        metadata=partner.metadata,
    )
    large = gateway.stub.CreateWithdrawal(create_request(amount="300"), metadata=partner.metadata)
    user_request = create_request(amount="7")
    user_request.withdrawal.user_ref = "user-42"
    of_user = gateway.stub.CreateWithdrawal(user_request, metadata=partner.metadata)

    def names(text: str) -> list[str]:
        page = gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(filter=text), metadata=partner.metadata
        )
        return [w.name for w in page.withdrawals]

    assert names(f'recipient_address = "{to_checksum_address(recipient)}"') == [
        middle.name,
        small.name,
    ]
    assert names('amount >= "7" AND amount < "300"') == [of_user.name, middle.name]
    assert names('amount > "20"') == [large.name]
    assert names("amount = 1.5") == [small.name]
    assert names('amount = "1.5000001"') == []  # finer than the token's 6 decimals
    assert names('user_ref = "user-42"') == [of_user.name]
    assert names('token = "usdc" AND amount <= "1.5"') == [small.name]
    assert names('token = "DAI"') == []
    since = middle.create_time.ToJsonString()
    assert names(f'create_time >= "{since}" AND amount < "100"') == [of_user.name, middle.name]
    assert names(f'create_time < "{since}"') == [small.name]
    assert names('create_time < "2000-01-01T00:00:00Z"') == []
    for bad_filter in (
        'create_time >= "yesterday"',
        'create_time >= "2026-12-01T00:00:00"',  # no zone
        'recipient_address = "nope"',
        'user_ref > "a"',
        'amount > "1" OR state = QUEUED',
        'batch = "01j"',
        'token = "USDC" AND token = "DAI"',
    ):
        with pytest.raises(grpc.RpcError) as caught:
            names(bad_filter)
        code, _, fields = rich_error(caught.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["filter"], bad_filter


def test_state_changes_list_the_audit_trail_in_pages(
    gateway: RunningGateway, partner_a: Partner, partner_b: Partner
) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    cancelled = gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=created.name, reason="changed my mind"),
        metadata=partner_a.metadata,
    )
    first = gateway.stub.ListStateChanges(
        withdrawal_pb2.ListStateChangesRequest(parent=created.name, page_size=1),
        metadata=partner_a.metadata,
    )
    assert [c.name for c in first.state_changes] == [f"{created.name}/stateChanges/1"]
    creation = first.state_changes[0]
    assert creation.from_state == withdrawal_pb2.STATE_UNSPECIFIED
    assert creation.to_state == withdrawal_pb2.STATE_RECEIVED
    assert creation.occur_time.ToDatetime() == created.create_time.ToDatetime()
    rest = gateway.stub.ListStateChanges(
        withdrawal_pb2.ListStateChangesRequest(
            parent=created.name, page_size=1, page_token=first.next_page_token
        ),
        metadata=partner_a.metadata,
    )
    changes = list(first.state_changes) + list(rest.state_changes)
    assert changes[-1].to_state == withdrawal_pb2.STATE_CANCELLED == cancelled.state
    assert changes[-1].version == cancelled.version
    everything = gateway.stub.ListStateChanges(
        withdrawal_pb2.ListStateChangesRequest(parent=created.name),
        metadata=partner_a.metadata,
    )
    assert [c.version for c in everything.state_changes] == list(range(1, cancelled.version + 1))
    assert not everything.next_page_token
    with pytest.raises(grpc.RpcError) as caught:  # another partner's withdrawal
        gateway.stub.ListStateChanges(
            withdrawal_pb2.ListStateChangesRequest(parent=created.name),
            metadata=partner_b.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    other = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    for request, field in (
        (withdrawal_pb2.ListStateChangesRequest(parent="withdrawal/1"), "parent"),
        (
            withdrawal_pb2.ListStateChangesRequest(
                parent=other.name, page_token=first.next_page_token
            ),
            "page_token",
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.ListStateChanges(request, metadata=partner_a.metadata)
        code, _, fields = rich_error(caught.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field]


def test_cancel_before_signing_only(gateway: RunningGateway, partner_a: Partner) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    cancelled = gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=created.name, reason="user asked"),
        metadata=partner_a.metadata,
    )
    assert cancelled.state == STATE.STATE_CANCELLED
    assert cancelled.state_reason == "CANCELLED_BY_PARTNER"
    assert cancelled.HasField("end_time")
    again = gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=created.name), metadata=partner_a.metadata
    )
    assert again == cancelled  # idempotent

    # A signed withdrawal can no longer be cancelled.
    signed = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    withdrawal_id = signed.name.split("/")[1]
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            Withdrawal.__table__.update()
            .where(Withdrawal.id == withdrawal_id)
            .values(state="SIGNED", tx_hash="0x" + "ab" * 32, payout_tx_id=new_ulid())
        )
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CancelWithdrawal(
            withdrawal_pb2.CancelWithdrawalRequest(name=signed.name), metadata=partner_a.metadata
        )
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "WITHDRAWAL_NOT_CANCELLABLE"
    # Nor one that waits ON_HOLD after a payout that carried its number (it could still pay).
    held = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            Withdrawal.__table__.update()
            .where(Withdrawal.id == held.name.split("/")[1])
            .values(state="ON_HOLD", payout_number=int(uuid.uuid4().int % 10**12))
        )
    with pytest.raises(grpc.RpcError) as caught:
        gateway.stub.CancelWithdrawal(
            withdrawal_pb2.CancelWithdrawalRequest(name=held.name), metadata=partner_a.metadata
        )
    assert rich_error(caught.value)[1].reason == "WITHDRAWAL_NOT_CANCELLABLE"
    with gateway.server.store.sessions() as session:
        audits = session.scalars(
            select(WithdrawalAudit.to_state).where(
                WithdrawalAudit.withdrawal_id == created.name.split("/")[1]
            )
        ).all()
        assert list(audits) == ["RECEIVED", "CANCELLED"]


def test_watch_streams_snapshot_then_changes(gateway: RunningGateway, partner_a: Partner) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    stream = gateway.stub.WatchWithdrawal(
        withdrawal_pb2.WatchWithdrawalRequest(name=created.name),
        metadata=partner_a.metadata,
        timeout=20,
    )
    first = next(stream)
    assert first.event_type == withdrawal_pb2.EVENT_TYPE_SNAPSHOT
    assert first.withdrawal.state == STATE.STATE_RECEIVED
    gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=created.name), metadata=partner_a.metadata
    )
    rest = list(stream)  # ends by itself at the terminal state
    assert [(e.event_type, e.previous_state, e.withdrawal.state) for e in rest] == [
        (withdrawal_pb2.EVENT_TYPE_STATE_CHANGED, STATE.STATE_RECEIVED, STATE.STATE_CANCELLED)
    ]


def test_watch_of_other_partner_is_not_found(
    gateway: RunningGateway, partner_a: Partner, partner_b: Partner
) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    with pytest.raises(grpc.RpcError) as caught:
        list(
            gateway.stub.WatchWithdrawal(
                withdrawal_pb2.WatchWithdrawalRequest(name=created.name),
                metadata=partner_b.metadata,
                timeout=10,
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(gateway: RunningGateway) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    responses = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in responses[0].list_services_response.service}
    assert "assetwithdrawal.withdrawal.v1.WithdrawalService" in names
    assert "grpc.health.v1.Health" in names
    # grpcurl's `describe`: the file descriptor of the service resolves too.
    responses = list(
        stub.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="assetwithdrawal.withdrawal.v1.WithdrawalService"
                    )
                ]
            )
        )
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[0].file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.name == "assetwithdrawal/withdrawal/v1/withdrawal.proto" for f in files)


def test_health_is_serving(gateway: RunningGateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(gateway.channel)
    response = stub.Check(
        health_pb2.HealthCheckRequest(service="assetwithdrawal.withdrawal.v1.WithdrawalService")
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", ["GetWithdrawal", "CreateWithdrawal", "WatchWithdrawal"])
def test_malformed_request_bytes_are_invalid_argument(
    gateway: RunningGateway, partner_a: Partner, method: str
) -> None:
    """Found by fuzzing gRPC with random bytes: a request that does not parse was UNKNOWN."""
    path = f"/assetwithdrawal.withdrawal.v1.WithdrawalService/{method}"
    if method == "WatchWithdrawal":
        call = gateway.channel.unary_stream(path)
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(call(b"\xff\xff\xff", metadata=partner_a.metadata, timeout=5)))
    else:
        with pytest.raises(grpc.RpcError) as caught:
            gateway.channel.unary_unary(path)(
                b"\xff\xff\xff", metadata=partner_a.metadata, timeout=5
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details}
    assert kinds == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}


def test_errors_quote_long_values_cut_so_the_status_fits_the_trailers(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    """A 5,000-character value named in an error is quoted cut to 40 characters: whole, the
    status (message and details) outgrew the client's 8 KiB trailer limit and the caller got
    RESOURCE_EXHAUSTED with no details (found by tests/fuzz)."""
    long = "a" * 5000
    bad_token = create_request(token=long)
    bad_token.withdrawal.chain = long
    calls = [
        lambda: gateway.stub.CreateWithdrawal(bad_token, metadata=partner_a.metadata),
        lambda: gateway.stub.GetWithdrawal(
            withdrawal_pb2.GetWithdrawalRequest(name=long), metadata=partner_a.metadata
        ),
        lambda: gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(filter=long), metadata=partner_a.metadata
        ),
        lambda: gateway.stub.ListWithdrawals(
            withdrawal_pb2.ListWithdrawalsRequest(filter=f"state = {long}"),
            metadata=partner_a.metadata,
        ),
    ]
    for send in calls:
        with pytest.raises(grpc.RpcError) as failed:
            send()
        code, info, fields = rich_error(failed.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and info.reason and fields
        message = failed.value.details()  # type: ignore[attr-defined]
        assert "a" * 37 + "..." in message and "a" * 41 not in message
