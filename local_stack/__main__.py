"""Start the local stack: moto on ``MOTO_PORT``, the table, ``chalice local`` on ``PORT`` (with API
Gateway's compression: ``local_stack/api.py``), a scheduler that invokes the real scheduled
function every ``TICK_SECONDS``, and (unless ``SIMULATE=0``) a simulated cache tier with its
workload that also plays the front-end.

Runs until Ctrl-C or SIGTERM, then stops everything and exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from moto.server import ThreadedMotoServer

from chalicelib import cli
from chalicelib.adapters import aws
from chalicelib.domain.config import update_config
from chalicelib.domain.errors import ScalerError
from chalicelib.domain.settings import Settings
from local_stack.scheduler import Scheduler, SimulatedClock, real_clock

HOST = "127.0.0.1"
STAGE = "dev"
PROJECT_DIR = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 10.0
DEMO_THRESHOLDS = {"max_miss_rate_threshold": 0.3, "min_miss_rate_threshold": 0.1}


class StartError(Exception):
    """The stack could not start; the message says what to change."""


def _port(name: str, default: int) -> int:
    text = os.environ.get(name) or str(default)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise StartError(f"{name}={text!r} is not a port number (1-65535)")
    return int(text)


def _require_free(port: int, name: str) -> None:
    # SO_REUSEADDR as the servers themselves use it: a port left in TIME_WAIT by the previous
    # run binds fine and must not count as taken; a listening socket still refuses.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise StartError(f"port {port} on {HOST} is already in use; set {name} to a free port") from exc


def _set_environment(moto_port: int) -> None:
    """The AWS settings that point this process and its child at the emulator, and the pool's
    name: set here, once, so that the API (a child), the scheduler and the simulation (this
    process) all run the same pool whatever each would default to."""
    os.environ["AWS_ENDPOINT_URL"] = f"http://{HOST}:{moto_port}"
    os.environ["POOL_NAME"] = os.environ.get("POOL_NAME") or STAGE
    # boto3 refuses to sign without credentials; the emulator accepts any.
    defaults = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SCALER_API_TOKEN": secrets.token_urlsafe(24),
    }
    for name, value in defaults.items():
        if not os.environ.get(name):
            os.environ[name] = value


def _prepare_emulator() -> None:
    """Create the table and pick an AMI, through the same code operators use."""
    if not os.environ.get("NODE_AMI_ID"):
        images = aws.client("ec2").describe_images(Owners=["amazon"])["Images"]
        if not images:
            raise StartError("the emulator offers no Amazon image; set NODE_AMI_ID")
        os.environ["NODE_AMI_ID"] = images[0]["ImageId"]
    result = cli.bootstrap(Settings.from_env(cli.stage_environment(STAGE)))
    print(f"table {result['table']}: {'created' if result['created'] else 'already there'}", flush=True)


def _start_api(port: int) -> subprocess.Popen[bytes]:
    # What ``chalice local --no-autoreload`` serves, compressed as API Gateway would
    # (local_stack/api.py). No autoreload: its watcher stats every file under the project (the
    # .venv included) each second and restarts on any new file, and adds a grandchild that
    # SIGTERM would orphan.
    options = ["--host", HOST, "--port", str(port), "--stage", STAGE]
    # The child inherits an ignored SIGINT, so Ctrl-C at the terminal (sent to the whole
    # process group) reaches only us and we stop the child in order, without its traceback.
    # It stays in our process group, so a supervisor's killpg still reaches it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen([sys.executable, "-m", "local_stack.api", *options], cwd=PROJECT_DIR)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_until_ready(api: subprocess.Popen[bytes], port: int) -> None:
    url = f"http://{HOST}:{port}/api/scaler"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise StartError(f"chalice local exited with code {api.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_SECONDS)
    raise StartError(f"the API did not answer 200 on {url} within {READY_TIMEOUT_SECONDS:.0f} s")


def _stop(api: subprocess.Popen[bytes]) -> None:
    if api.poll() is None:
        api.terminate()
        try:
            api.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def _announce(port: int, moto_port: int) -> None:
    url = f"http://{HOST}:{port}/"
    token = os.environ["SCALER_API_TOKEN"]
    print(
        "\n".join(
            [
                "",
                f"memcache-scaler local stack (stage {STAGE}, pool {os.environ['POOL_NAME']}, "
                f"AWS emulator on {HOST}:{moto_port})",
                f"  URL:       {url}",
                f"  API token: {token}",
                f"  try:       curl -H 'Authorization: Bearer {token}' {url}api/scaler/config",
                "Ctrl-C stops the stack.",
            ]
        ),
        flush=True,
    )


def run() -> NoReturn:
    """Start everything, then serve until interrupted (KeyboardInterrupt) or a failure (StartError)."""
    moto_port, port = _port("MOTO_PORT", 5000), _port("PORT", 8000)
    if moto_port == port:
        raise StartError(f"MOTO_PORT and PORT are both {port}; set one of them to another port")
    _require_free(moto_port, "MOTO_PORT")
    _require_free(port, "PORT")
    simulate = os.environ.get("SIMULATE", "1").strip() not in ("0", "false", "no", "")
    tick_seconds = _tick_seconds(simulate)
    _set_environment(moto_port)
    # werkzeug would log every emulator request; the API's own log is the useful one.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    emulator = ThreadedMotoServer(ip_address=HOST, port=moto_port, verbose=False)
    emulator.start()
    api: subprocess.Popen[bytes] | None = None
    simulation: Any = None
    scheduler: Scheduler | None = None
    try:
        _prepare_emulator()
        if simulate:
            simulation = _start_simulation(port)
        api = _start_api(port)
        _wait_until_ready(api, port)
        _announce(port, moto_port)
        if tick_seconds > 0:
            scheduler = _start_scheduler(tick_seconds, simulation)
        api.wait()
        raise StartError(f"chalice local exited with code {api.returncode}")
    finally:
        if scheduler is not None:
            scheduler.stop()
        if api is not None:
            _stop(api)
        if simulation is not None:
            simulation.stop()
        emulator.stop()


def _tick_seconds(simulate: bool) -> float:
    text = os.environ.get("TICK_SECONDS") or ("1.5" if simulate else "60")
    try:
        seconds = float(text)
    except ValueError:
        raise StartError(
            f"TICK_SECONDS={text!r} is not a number of seconds (0 turns the scheduler off)"
        ) from None
    if seconds < 0:
        raise StartError("TICK_SECONDS must be 0 (off) or positive")
    return seconds


def _tier_choice() -> str:
    """``TIER``: ``memcached`` (real processes) or ``sim`` (the LRU model); by default
    ``memcached`` when its binary is on PATH, saying so when it falls back."""
    tier = (os.environ.get("TIER") or "").strip().lower()
    if tier not in ("", "memcached", "sim"):
        raise StartError(f"TIER={tier!r}: choose memcached or sim")
    if tier == "memcached" and shutil.which("memcached") is None:
        raise StartError(
            "TIER=memcached but no memcached on PATH (apt-get install memcached), or set TIER=sim"
        )
    if not tier:
        if shutil.which("memcached") is None:
            print(
                "tier: sim (the Python model): no memcached on PATH; install it for the real tier", flush=True
            )
            return "sim"
        tier = "memcached"
    print(f"tier: {tier}", flush=True)
    return tier


def _start_simulation(port: int) -> Any:
    """The simulated cache tier; its front-end receives the scaler's notifications."""
    from sim.simulation import Simulation

    tier: Any = None
    if _tier_choice() == "memcached":
        from sim.memcached_tier import MemcachedTier

        tier = MemcachedTier()  # its agents inherit the emulator's endpoint from our environment
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulation = Simulation(
        pool_name=os.environ["POOL_NAME"],  # set by _set_environment, as for the API
        api_url=f"http://{HOST}:{port}",
        token=os.environ["SCALER_API_TOKEN"],
        start=start,
        secret=os.environ.get("FRONTEND_NOTIFY_SECRET") or None,
        tier=tier,
    )
    simulation.start()
    os.environ["FRONTEND_NOTIFY_URL"] = simulation.url  # for chalice local and the scheduler
    os.environ["SIM_START"] = start.isoformat()
    # The simulated day crosses these clearly (sim/workload.py); SPEC's defaults (0.8 / 0.2)
    # suit a real tier, whose misses cost more than a demo's.
    settings = Settings.from_env(cli.stage_environment(STAGE))
    update_config(
        cli.StateStore(settings.table_name, settings.pool_name),
        DEMO_THRESHOLDS,
        source_ip="local-stack",
        now=start,
    )
    print(f"simulation: thresholds {DEMO_THRESHOLDS}; the front-end listens on {simulation.url}", flush=True)
    return simulation


def _start_scheduler(tick_seconds: float, simulation: Any) -> Scheduler:
    """Invoke the app's real scheduled function in this process, with the dev stage's settings."""
    os.environ.update(cli.stage_environment(STAGE))
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    from app import scale

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return scale(event, None)

    if simulation is not None:
        clock: Any = SimulatedClock(datetime.fromisoformat(os.environ["SIM_START"]))
        mode = f"simulated clock from {os.environ['SIM_START'][:16]}, one minute per tick"
    else:
        clock, mode = real_clock, "real clock"
    print(f"scheduler: a tick every {tick_seconds:g} s ({mode})", flush=True)
    step = _recorded(simulation.step, os.environ.get("SIM_MINUTES_FILE")) if simulation is not None else None
    scheduler = Scheduler(tick_seconds, clock, invoke, step, out=lambda line: print(line, flush=True))
    scheduler.start()
    return scheduler


def _recorded(step: Any, path: str | None) -> Any:
    """``step``, appending each minute's summary (what the tier's nodes counted) to ``path`` as
    a JSON line with its time, when ``SIM_MINUTES_FILE`` names one."""
    if not path:
        return step

    def recorded(moment: datetime) -> dict[str, Any]:
        summary = step(moment)
        with open(path, "a") as out:
            out.write(json.dumps({"time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), **summary}) + "\n")
        return summary

    return recorded


def main() -> int:
    # SIGTERM takes the same path as Ctrl-C, so both stop the child before we exit. SIGINT is
    # set too: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run()
    except KeyboardInterrupt:
        print("\nlocal stack stopped", flush=True)
        return 0
    except (StartError, ScalerError) as exc:
        print(f"local stack: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
