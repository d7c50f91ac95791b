"""The node agent's CPU per 10,000 GETs for the miss-ratio curve: ``python -m bench.agent_curve_cpu``.

Feeds 100,000 lines shaped like memcached's ``watch fetchers`` stream (skewed keys) to the
agent's tally with a 10,000-item stack and prints ``time.process_time()`` per 10,000 GETs.
Reading the socket is not included; it is small next to the parsing and the stack.
"""

from __future__ import annotations

import random
import time

from node_agent.curve import CurveTally

LINES = 100_000
CAPACITY_ITEMS = 10_000


def main() -> None:
    chooser = random.Random(1)
    lines = [
        f"ts=1796210810.85982 gid={n} type=item_get key=k{min(int(chooser.paretovariate(0.5)), 200_000)} "
        "status=found clsid=1 cfd=25 size=100"
        for n in range(LINES)
    ]
    tally = CurveTally(CAPACITY_ITEMS)
    start = time.process_time()
    for line in lines:
        tally.feed(line)
    spent = time.process_time() - start
    print(f"{spent * 10_000 / LINES:.3f} s of CPU per 10,000 GETs ({CAPACITY_ITEMS:,}-item stack)")


if __name__ == "__main__":
    main()
