"""A simulated cache tier and its workload, for the local stack and benchmarks.

Not part of the Lambda: nothing in ``chalicelib`` imports it. The pure parts (``lru``,
``hashring``, ``workload``, ``tier``) do no I/O; ``aws`` and ``frontend`` are the edges, and
``simulation`` wires them together, one simulated minute per ``Simulation.step``.
"""
