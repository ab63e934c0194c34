"""The HTTP layer: dependencies, problem+json errors, pagination, idempotency and the routers."""
