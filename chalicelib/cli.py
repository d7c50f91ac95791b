"""Operator commands: ``python -m chalicelib.cli [--stage S] COMMAND``; ``COMMAND --help`` for more.

  bootstrap                   create the table (on-demand, TTL on history); safe to repeat
  status                      config, pool size, nodes and the last decision
  tick [--at T] [--dry-run]   one tick with that clock; prints the decision
  history [--minutes N]       the history records of the last N minutes (default 60)
  pause | resume              auto_mode off | on
  config get                  the whole config
  config set KEY=VALUE...     change config fields; a value is JSON when it parses, else text
  drain NODE_ID               confirm that a draining node may go: it is terminated

Every command prints JSON on stdout. The writes go through the same checks and versioned
writes as the HTTP routes (``POST /api/scaler/config``, ``POST /api/poolsize/change``), and
their records say ``"source_ip": "cli"``.

Honours ``AWS_ENDPOINT_URL`` (boto3 reads it). A stage's ``environment_variables`` from
``.chalice/config.json`` win over the shell's, as they do for the deployed functions and for
``chalice local``, so that ``--stage prod bootstrap`` creates the table the prod stage uses.

Exit codes (the HTTP status the same outcome gets from the API in brackets):
  0  done; the JSON answer is on stdout
  1  AWS failed, or another writer kept winning [503]: try again
  2  bad arguments, bad input or a bad environment variable [400]: nothing changed
  3  no such node, or a conflict with the pool's state [404, 409]: nothing changed
An error is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.adapters.dynamodb import StateStore
from chalicelib.domain.clock import tick_time
from chalicelib.domain.errors import (
    ConfigurationError,
    DependencyError,
    PoolConflictError,
    ScalerError,
    UnknownNodeError,
    ValidationError,
)
from chalicelib.domain.pool import describe_nodes
from chalicelib.domain.settings import Settings
from chalicelib.service import wiring
from chalicelib.service.config_change import change_config
from chalicelib.service.history import parse_minutes, pool_clock, read_history
from chalicelib.service.membership import INSTANCE_ID, Membership
from chalicelib.service.tick import TickDeps, run_tick

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Who changed things, in history records; the routes write the caller's IP there.
SOURCE = "cli"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
# Every command's --help ends with them.
EXIT_CODES = "Exit codes" + (__doc__ or "").partition("\nExit codes")[2]

_EXIT_FOR: list[tuple[type[ScalerError], int]] = [
    (ValidationError, EXIT_USAGE),
    (ConfigurationError, EXIT_USAGE),
    (UnknownNodeError, EXIT_REFUSED),
    (PoolConflictError, EXIT_REFUSED),
    (DependencyError, EXIT_FAILED),
]


def exit_code(exc: ScalerError) -> int:
    return next((code for kind, code in _EXIT_FOR if isinstance(exc, kind)), EXIT_FAILED)


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


def history(settings: Settings, minutes: str | None = None) -> dict[str, Any]:
    """``GET /api/scaler/history``'s answer; ``minutes`` as text, checked as the route checks it."""
    return {"records": read_history(_store(settings), parse_minutes(minutes))}


def get_config(settings: Settings) -> dict[str, Any]:
    return _store(settings).load_config()[0]


def set_config(settings: Settings, fields: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/scaler/config`` with a JSON body of ``fields``: the whole config after it."""
    return change_config(_store(settings), fields, from_form=False, source_ip=SOURCE)


def drain(settings: Settings, node_id: str) -> dict[str, Any]:
    """``POST /api/poolsize/change`` for the node with that id: it must be draining."""
    if not INSTANCE_ID.fullmatch(node_id):
        raise ValidationError(f"not an EC2 instance id: {node_id!r}")
    built = wiring.adapters(settings)
    membership = Membership(built.store, built.ec2, settings, pool_clock, built.notifier)
    return {"terminated": membership.confirm_drain_of(node_id, source_ip=SOURCE)}


def assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``config set``: the value as JSON when it parses (numbers, true/false),
    else as the text itself (``policy=predictive``)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _fields(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The fields of ``config set``; a key given twice is refused, as a repeated JSON key is."""
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            raise ValidationError(f"{key}: given more than once")
        fields[key] = value
    return fields


def _parser() -> argparse.ArgumentParser:
    formatted: dict[str, Any] = {
        "formatter_class": argparse.RawDescriptionHelpFormatter,
        "epilog": EXIT_CODES,
    }
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stage",
        default=os.environ.get("CHALICE_STAGE", "dev"),
        help="the stage whose settings (table) to use: dev (default, or CHALICE_STAGE) or prod",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        text = textwrap.fill(description or summary, width=100)
        return commands.add_parser(name, help=summary, description=text, **formatted)

    command("bootstrap", "create the table (safe to repeat)")
    command("status", "config, pool size and nodes")
    tick_parser = command("tick", "one tick with that clock; prints the decision")
    tick_parser.add_argument("--at", help="the tick's time, ISO-8601 (default: now)")
    tick_parser.add_argument("--dry-run", action="store_true", help="decide, but change nothing")
    history_parser = command(
        "history",
        "the history records, oldest first",
        "The history records of the N minutes up to the pool's clock (the last tick's T), and any "
        'record stamped later, as GET /api/scaler/history answers them: {"records": [...]}.',
    )
    history_parser.add_argument("--minutes", metavar="N", help="1..10080 (default 60)")
    command("pause", "auto_mode off: ticks observe and keep the bounds only; prints the config")
    command("resume", "auto_mode on: ticks scale again; prints the config")
    config_parser = command("config", "read or change the config")
    config_commands = config_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    config_commands.add_parser("get", help="the whole config", description="The whole config.", **formatted)
    set_parser = config_commands.add_parser(
        "set",
        help="change config fields",
        description=textwrap.fill(
            "Change config fields, as POST /api/scaler/config does with a JSON body: a value is "
            "JSON when it parses (0.7, 3, true), else text (predictive). Every problem is reported "
            "at once and nothing is written; prints the whole config after the change.",
            width=100,
        ),
        **formatted,
    )
    set_parser.add_argument("fields", nargs="+", type=assignment, metavar="KEY=VALUE")
    drain_parser = command(
        "drain",
        "confirm that a draining node may go",
        "Confirm that the draining node NODE_ID may go, as the front-end does with "
        'POST /api/poolsize/change: it is terminated and leaves the list; {"terminated": NODE_ID}. '
        "Confirming again answers the same.",
    )
    drain_parser.add_argument("node_id", metavar="NODE_ID", help="the node's EC2 instance id")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    match args.command:
        case "bootstrap":
            return bootstrap(settings)
        case "status":
            return status(settings)
        case "tick":
            return tick(settings, args.at, args.dry_run)
        case "history":
            return history(settings, args.minutes)
        case "pause" | "resume":
            return set_config(settings, {"auto_mode": args.command == "resume"})
        case "config" if args.action == "get":
            return get_config(settings)
        case "config":
            return set_config(settings, _fields(args.fields))
        case "drain":
            return drain(settings, args.node_id)
    raise AssertionError(f"unhandled command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "tick" and args.at is not None:
        try:
            tick_time(args.at)
        except ValueError:
            parser.error(f"--at: not an ISO-8601 time: {args.at!r}")
    try:
        settings = Settings.from_env(stage_environment(args.stage))
    except ValueError as exc:  # the settings name the variable and what it must be
        print(f"error: bad environment: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = _run(args, settings)
    except ScalerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(json.dumps(result, indent=2))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
