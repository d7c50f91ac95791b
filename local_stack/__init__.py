"""The local stack: the scaler on loopback with no AWS account (``python -m local_stack``).

One process tree: this process runs the AWS emulator (moto) in a thread and ``chalice local``
as a child. See ``__main__.py`` for the start-up order and how it stops.
"""
