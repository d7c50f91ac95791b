"""The services: one tick, the executor of plans, membership changes, manual resizes, and
the composition root that builds the adapters."""
