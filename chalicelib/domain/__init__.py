"""The domain: the pool, its plans and policies, notices, config rules and the clock.

Pure: no AWS SDK, no Chalice, no Powertools (import-linter checks it).
"""
