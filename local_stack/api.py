"""``chalice local``, with the response compression API Gateway applies to the deployed API.

API Gateway compresses a response when the stage's config sets ``minimum_compression_size``,
the request's ``Accept-Encoding`` accepts a coding it supports, the integration's answer has no
``Content-Encoding`` and is at least that size. ``chalice local`` compresses nothing, so a
dashboard on the local stack would load Chart.js's 208 KB uncompressed where the deployed one
loads 71 KB: this server does what ``chalice local --no-autoreload`` does, and then, for
answers that qualify, what API Gateway does (gzip only).

    python -m local_stack.api --host 127.0.0.1 --port 8000 --stage dev
"""

from __future__ import annotations

import argparse
import functools
import gzip
import logging
import os
import sys
from pathlib import Path
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.deploy.validate import validate_routes
from chalice.local import ChaliceRequestHandler, LocalDevServer

PROJECT_DIR = Path(__file__).resolve().parent.parent


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (named, or ``*``, with a q above 0)."""
    codings: dict[str, float] = {}
    for part in (accept_encoding or "").split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name.strip():
            codings[name.strip().lower()] = quality
    return codings.get("gzip", codings.get("x-gzip", codings.get("*", 0.0))) > 0


class CompressingRequestHandler(ChaliceRequestHandler):
    """Chalice's local handler, gzipping answers as API Gateway would with ``minimum_size``."""

    def __init__(self, *args: Any, minimum_size: int | None, **kwargs: Any) -> None:
        self.minimum_size = minimum_size  # set first: the base class handles the request at once
        super().__init__(*args, **kwargs)

    def _send_http_response_with_body(self, code: int, headers: dict[str, Any], body: str | bytes) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        if (
            self.minimum_size is not None
            and not any(name.lower() == "content-encoding" for name in headers)
            and len(data) >= self.minimum_size
            and accepts_gzip(self.headers.get("Accept-Encoding"))
        ):
            data = gzip.compress(data)
            headers = {**headers, "Content-Encoding": "gzip"}
        super()._send_http_response_with_body(code, headers, data)


def create_server(host: str, port: int, stage: str, project_dir: Path = PROJECT_DIR) -> LocalDevServer:
    """What ``chalice local`` serves for ``stage``, compressing as the stage's API Gateway would."""
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    validate_routes(app.routes)  # as chalice local does: what chalice deploy would refuse
    handler = functools.partial(CompressingRequestHandler, minimum_size=config.minimum_compression_size)
    return LocalDevServer(app, config, host, port, handler_cls=handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    options = parser.parse_args(argv)
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"  # as the chalice CLI sets it
    os.chdir(PROJECT_DIR)
    # The function's log on stdout, as chalice local (and Lambda) show it.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    server = create_server(options.host, options.port, options.stage)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
