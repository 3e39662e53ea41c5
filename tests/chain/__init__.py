"""Chain-layer tests: anvil, its RPC extras, the compiled contracts (real anvil, no mocks)."""
