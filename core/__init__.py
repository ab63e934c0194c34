"""The contract layer: pure definitions both `service/` and `workers/` use; it imports neither."""
