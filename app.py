"""Wiring only: the Chalice app, its middleware and its routes. Logic lives in chalicelib/."""

from chalice import Chalice

from chalicelib.api import api
from chalicelib.auth import http_middleware

app = Chalice(app_name="memcache-scaler")
app.register_middleware(http_middleware, "http")
app.register_blueprint(api)
