"""The admin API (`assetwithdrawal.admin.v1.AdminService`), served by the gateway beside the
WithdrawalService: operator authentication (`auth`), the role each method requires (`roles`),
the dispatcher that checks both and audits refusals (`dispatch`), the transport-neutral core
(`core`), the four-eyes change mechanism (`changes`, with its kinds in `kinds`) and the gRPC
adapter (`servicer`). REST and the OpenAPI document come from the same descriptors."""
