"""The self-service portal the gateway serves at `/portal` (partners) and `/portal/admin`
(operators): static pages, and a JSON API that runs every call through the same dispatchers
and cores as the REST API, as the identity of the caller's server-side session."""
