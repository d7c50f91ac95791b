"""Operator commands: ``python -m chalicelib.cli [--stage S] bootstrap|status|tick``.

Honours ``AWS_ENDPOINT_URL`` (boto3 reads it). A stage's ``environment_variables`` from
``.chalice/config.json`` win over the shell's, as they do for the deployed functions and for
``chalice local``, so that ``--stage prod bootstrap`` creates the table the prod stage uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain.clock import tick_time
from chalicelib.domain.errors import ScalerError
from chalicelib.domain.pool import describe_nodes
from chalicelib.domain.settings import Settings
from chalicelib.service import wiring
from chalicelib.service.tick import TickDeps, run_tick

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stage_environment(stage: str, project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """The process environment, overridden by the stage's variables from ``.chalice/config.json``."""
    path = project_dir / ".chalice" / "config.json"
    variables: dict[str, str] = {}
    if path.exists():
        config = json.loads(path.read_text())
        variables.update(config.get("environment_variables", {}))
        variables.update(config.get("stages", {}).get(stage, {}).get("environment_variables", {}))
    return {**os.environ, **variables}


def _store(settings: Settings) -> StateStore:
    return wiring.adapters(settings).store


def bootstrap(settings: Settings) -> dict[str, Any]:
    created = _store(settings).create_table()
    return {"table": settings.table_name, "created": created}


def status(settings: Settings) -> dict[str, Any]:
    config, _, pool = _store(settings).load_state()
    return {
        "table": settings.table_name,
        "pool": settings.pool_name,
        "pool_size": pool.pool_size,
        "cache_pool_ids": pool.cache_pool_ids,
        "nodes": describe_nodes(pool),
        # Ended by the pool, termination not yet confirmed by EC2: each tick retries them.
        "terminating": list(pool.terminating),
        "config": config,
        "last_tick": pool.last_tick,
        "last_decision": pool.last_decision,
    }


def tick(settings: Settings, at: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    moment = at or datetime.now(UTC).isoformat()
    return run_tick(TickDeps.from_settings(settings), moment, dry_run=dry_run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.cli", description=__doc__)
    parser.add_argument("--stage", default=os.environ.get("CHALICE_STAGE", "dev"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bootstrap", help="create the table (safe to repeat)")
    commands.add_parser("status", help="config, pool size and nodes")
    tick_parser = commands.add_parser("tick", help="one tick with that clock; prints the decision")
    tick_parser.add_argument("--at", help="the tick's time, ISO-8601 (default: now)")
    tick_parser.add_argument("--dry-run", action="store_true", help="decide, but change nothing")
    args = parser.parse_args(argv)
    settings = Settings.from_env(stage_environment(args.stage))
    try:
        if args.command == "tick":
            if args.at is not None:
                try:
                    tick_time(args.at)
                except ValueError:
                    parser.error(f"--at: not an ISO-8601 time: {args.at!r}")
            result = tick(settings, args.at, args.dry_run)
        else:
            result = bootstrap(settings) if args.command == "bootstrap" else status(settings)
    except ScalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
