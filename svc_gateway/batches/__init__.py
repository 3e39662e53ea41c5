"""CSV batches: a partner's file of many withdrawals, validated row by row with the single
create's rules and stored in bulk (`BatchCore`, the transport-neutral core both the gRPC
client stream and the REST upload call).

- `spool`: the upload, spooled to a temporary file with its SHA-256 and size limit.
- `csv_file`: the file's header and rows, read incrementally, with line numbers.
- `rows`: one row's checks (`svc_gateway.validation`'s rules) and its problems.
- `storage`: the batch, its withdrawals (multi-row INSERTs in chunks) and problems.
- `report`: the report's rows, as protobuf and as CSV.
- `core`: the RPCs.
"""
