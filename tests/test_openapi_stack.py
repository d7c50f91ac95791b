"""openapi.yaml against the API as it runs: schemathesis' own CLI with every check, over HTTP to the
local stack (``chalice local`` on a free loopback port, moto behind it).

``tests/test_openapi.py`` drives the description in-process; this is the pass an outsider would run,
through a real HTTP server: every phase (coverage, fuzzing, stateful), every check, a fixed seed and
budget, one worker (two would race each other's resizes into documented 503s). What it leaves out,
and why, is in ``tests/schemathesis_hooks.py`` and below.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.schemathesis_hooks import refused_for_state
from tests.test_local_stack import TOKEN, free_ports, running_stack

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SEED = 17
# Cases per operation in the fuzzing and stateful phases; the coverage phase's ~430 cases are what
# the description defines.
EXAMPLES = 15
RUN_TIMEOUT_SECONDS = 300


def _schemathesis() -> str:
    beside = Path(sys.executable).with_name("schemathesis")  # the virtualenv's own
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed (requirements-dev.txt)"
    return found


def schemathesis_command(url: str) -> list[str]:
    return [
        _schemathesis(),
        "run",
        str(PROJECT_DIR / "openapi.yaml"),
        f"--url={url}",
        f"--header=Authorization: Bearer {TOKEN}",
        "--checks=all",
        # Replaced by the hooks' positive_data_accepted, which lets through only the 400s that
        # depend on the state a request meets (a merged config's rules, instances that do not exist).
        "--exclude-checks=positive_data_acceptance",
        # chalice local's HTTP server answers methods it does not know with its own 501, before the
        # app sees them; API Gateway answers those itself too.
        "--exclude-method=TRACE",
        "--exclude-method=QUERY",
        f"--max-examples={EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",  # every run the same cases, and nothing written
        "--no-color",
    ]


@pytest.mark.stack
def test_schemathesis_with_every_check_finds_nothing(tmp_path: Path) -> None:
    port, moto_port = free_ports(2)
    with running_stack(port, moto_port) as stack:
        done = subprocess.run(
            schemathesis_command(stack.url),
            cwd=tmp_path,  # any report it writes stays out of the repository
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts is not None, output
    generated, passed = int(counts[1]), int(counts[2])
    assert generated == passed and generated > 500, output
    print(f"schemathesis against chalice local: {generated} cases, all passed")  # shown with pytest -s
    assert "positive_data_accepted" not in output and "Network Error" not in output, output


@pytest.mark.parametrize(
    "message",
    [
        "min_miss_rate_threshold must be below max_miss_rate_threshold (would be 0.85 and 0.8)",
        "min_pool_size must not exceed max_pool_size (would be 5 and 4)",
        "min_miss_rate_threshold must be below max_miss_rate_threshold (would be 0.9 and 0.7); "
        "min_pool_size must not exceed max_pool_size (would be 5 and 4)",
        "target_size: must be within [1, 4] (min_pool_size..max_pool_size)",
        "i-00000000: no such instance",
        "i-00000000: no such instance; i-0123456789abcdef0: instance is stopped, not pending or running",
        "i-00000000: image ami-1 is not the node image ami-2",
        "i-00000000: belongs to pool 'prod'",
        "being terminated by the pool, cannot be adopted: i-00000000, i-00000001",
    ],
)
def test_refusals_that_depend_on_state_pass_the_check(message: str) -> None:
    assert refused_for_state(message)


@pytest.mark.parametrize(
    "message",
    [
        "target_size: must be an integer, got 2.0",
        "ids listed more than once: i-c9b9c003",
        "cache_pool_ids must hold 1..8 ids, got 0",
        "scale_in_window_minutes: must be 1..60, got '3167080'",
        # one problem of state does not excuse one of form
        "i-00000000: no such instance; not EC2 instance ids: ''",
        "min_pool_size must not exceed max_pool_size (would be 5 and 4); min_get_requests: unknown field",
        "",
    ],
)
def test_refusals_of_a_requests_own_form_fail_the_check(message: str) -> None:
    assert not refused_for_state(message)
