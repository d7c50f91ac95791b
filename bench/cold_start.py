"""What a deploy weighs and how fast it starts cold: the prod package, ``import app``, and the
import plus the first tick, for an earlier commit and for the working tree, in the same run.

    .venv/bin/python -m bench.cold_start --before <commit> [--runs 5]

For each tree: ``chalice package --stage prod`` (the zip's size, and whether botocore or the
X-Ray SDK is inside); ``python -X importtime -c 'import app'`` (median of ``--runs``); and a cold
start: a fresh process timing ``import app`` and one scheduled tick against the AWS emulator
(moto server on loopback, emptied and bootstrapped before every run, so every first tick does
the same work: it launches the pool's first node). Runs of the two trees alternate, so the
machine's load falls on both alike. boto3 is imported inside the timed part, as in Lambda.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from moto.server import ThreadedMotoServer

PROJECT_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

COLD_START = """
import time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
event = {"time": "2026-12-02T12:00:00Z", "id": "cold", "detail-type": "Scheduled Event",
         "source": "aws.events", "account": "123456789012", "region": "us-east-1",
         "resources": [], "detail": {}, "version": "0"}
class Context:
    aws_request_id = "cold"
    def get_remaining_time_in_millis(self):
        return 120_000
summary = app.scale(event, Context())
t2 = time.perf_counter()
import sys
xray = any(name.startswith("aws_xray_sdk") for name in sys.modules)
print(f"{(t1 - t0) * 1000:.1f} {(t2 - t0) * 1000:.1f} {summary['action']} {xray}")
"""

CREATE_TABLE = """
from chalicelib.adapters.dynamodb import StateStore
StateStore("cold-start", "default").create_table()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _env(endpoint: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "POWERTOOLS_")) and name not in {"PYTHONPATH"}
    }
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        TABLE_NAME="cold-start",
        POOL_NAME="default",
        STAGE="prod",
        NODE_AMI_ID="ami-12c6146b",
        MOTO_EC2_LOAD_DEFAULT_AMIS="false",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="ERROR",
    )
    return env


@contextlib.contextmanager
def _tree(ref: str | None) -> Iterator[Path]:
    """The working tree, or ``ref`` exported into a temporary directory."""
    if ref is None:
        yield PROJECT_DIR
        return
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        archive = subprocess.run(["git", "archive", ref], cwd=PROJECT_DIR, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)


def package(tree: Path) -> tuple[int, int, list[str]]:
    """The prod deployment.zip: bytes, bytes unpacked, and which SDKs are inside."""
    with tempfile.TemporaryDirectory(prefix="package-") as out:
        env = _env("http://127.0.0.1:1")
        env.pop("AWS_ENDPOINT_URL")
        chalice = [sys.executable, "-c", "import sys; from chalice.cli import main; sys.exit(main())"]
        subprocess.run(
            [*chalice, "package", "--stage", "prod", out], cwd=tree, env=env, check=True, capture_output=True
        )
        path = Path(out) / "deployment.zip"
        with zipfile.ZipFile(path) as zipped:
            unpacked = sum(info.file_size for info in zipped.infolist())
            top = {name.split("/")[0] for name in zipped.namelist()}
        return path.stat().st_size, unpacked, sorted(top & {"botocore", "boto3", "aws_xray_sdk"})


def import_ms(tree: Path, endpoint: str) -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"],
        cwd=tree,
        env=_env(endpoint),
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in done.stderr.splitlines() if re.search(r"\|\s+app$", line))
    return int(line.split("|")[1]) / 1000


def cold_start_ms(tree: Path, endpoint: str) -> tuple[float, float, bool]:
    """A fresh emulator state, the table bootstrapped, then ``import app`` and one tick timed."""
    env = _env(endpoint)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    subprocess.run(
        [sys.executable, "-c", CREATE_TABLE], cwd=PROJECT_DIR, env=env, check=True, capture_output=True
    )
    done = subprocess.run(
        [sys.executable, "-c", COLD_START], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"the cold start failed in {tree}:\n{done.stderr}")
    imported, total, action, xray = done.stdout.split()
    assert action == "repair", f"the first tick did {action}, not the same work in every run"
    return float(imported), float(total), xray == "True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    port = _free_port()
    emulator = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    emulator.start()
    endpoint = f"http://{HOST}:{port}"
    results: dict[str, dict[str, object]] = {}
    try:
        with _tree(args.before) as before, _tree(None) as after:
            trees = {f"before ({args.before[:10]})": before, "after (working tree)": after}
            imports: dict[str, list[float]] = {name: [] for name in trees}
            colds: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in trees}
            for _ in range(args.runs):
                for name, tree in trees.items():
                    imports[name].append(import_ms(tree, endpoint))
                    colds[name].append(cold_start_ms(tree, endpoint))
            for name, tree in trees.items():
                size, unpacked, sdks = package(tree)
                results[name] = {
                    "zip_bytes": size,
                    "unpacked_bytes": unpacked,
                    "sdks_in_zip": sdks,
                    "import_app_ms_median": round(statistics.median(imports[name]), 1),
                    "cold_import_ms_median": round(statistics.median(c[0] for c in colds[name]), 1),
                    "cold_start_ms_median": round(statistics.median(c[1] for c in colds[name]), 1),
                    "x_ray_sdk_imported": any(c[2] for c in colds[name]),
                }
    finally:
        emulator.stop()
    width = max(map(len, results))
    print(f"{'':{width}}  {'zip':>9}  {'unpacked':>10}  {'import app':>10}  {'cold start':>10}  SDKs in zip")
    for name, row in results.items():
        print(
            f"{name:{width}}  {row['zip_bytes'] / 1e6:7.2f}MB  {row['unpacked_bytes'] / 1e6:8.2f}MB  "
            f"{row['import_app_ms_median']:8.1f}ms  {row['cold_start_ms_median']:8.1f}ms  "
            f"{', '.join(row['sdks_in_zip']) or '-'}"  # type: ignore[arg-type]
        )
    names = list(results)
    gained = float(results[names[0]]["cold_start_ms_median"]) - float(
        results[names[1]]["cold_start_ms_median"]
    )  # type: ignore[arg-type]
    print(f"cold start (import app + first tick, median of {args.runs}): {gained:.1f} ms faster")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
