"""Wiring only: the Chalice app, its middleware, its routes and its schedule.

Logic lives in chalicelib/.
"""

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent

from chalicelib.api import api
from chalicelib.auth import http_middleware
from chalicelib.tick import scheduled_tick

app = Chalice(app_name="memcache-scaler")
app.register_middleware(http_middleware, "http")
app.register_blueprint(api)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def scale(event: CloudWatchEvent) -> dict[str, Any]:
    """Every minute: read the miss rate, decide, resize the pool, record why."""
    return scheduled_tick(event.time)
