"""A front-end on loopback that records the scaler's notifications."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeFrontend:
    """Answers ``status`` (200 by default), after ``delay`` seconds; keeps what it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.received: list[tuple[dict[str, str], bytes]] = []
        # Called with each notification as it arrives, before it is answered.
        self.on_notice: Callable[[dict[str, Any]], None] | None = None
        frontend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                frontend.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if frontend.on_notice is not None:
                    frontend.on_notice(json.loads(body))
                if frontend.delay:
                    time.sleep(frontend.delay)  # a slow front-end, not a wait in the test
                self.send_response(frontend.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/scaler-notifications"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeFrontend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def notices(self) -> list[dict[str, Any]]:
        """Distinct notifications by sequence (retries of one count once), in arrival order."""
        seen: dict[int, dict[str, Any]] = {}
        for _, body in self.received:
            notice = json.loads(body)
            seen.setdefault(notice["sequence"], notice)
        return list(seen.values())
