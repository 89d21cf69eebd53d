"""Wire contracts: msgspec Structs for every request and response body, one module per area."""
