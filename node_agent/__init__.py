"""What runs on each memcache node: samples memcached and publishes SPEC's metrics to CloudWatch.

Ships alone to the node (stdlib and boto3 only): nothing here imports ``chalicelib``.
"""
