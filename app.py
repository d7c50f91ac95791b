"""Wiring only: the Chalice app, its middleware, its routes and its schedule.

Logic lives in chalicelib/.
"""

from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent

from chalicelib.adapters import observability
from chalicelib.service.tick import scheduled_tick
from chalicelib.web.auth import http_middleware
from chalicelib.web.routes import api

# Powertools' Logger writes the app's log (same logger name); Chalice's own handler would repeat it.
app = Chalice(app_name="memcache-scaler", configure_logs=False)
# Registered first, so outermost: refusals by the auth middleware are logged too.
app.register_middleware(observability.request_middleware, "http")
app.register_middleware(http_middleware, "http")
app.register_middleware(observability.tick_middleware, "scheduled")
app.register_blueprint(api)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def scale(event: CloudWatchEvent) -> dict[str, Any]:
    """Every minute: read the miss rate, decide, resize the pool, record why."""
    return scheduled_tick(event.time, event.context)
