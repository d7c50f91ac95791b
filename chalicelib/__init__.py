"""The memcache pool auto-scaler: everything but the wiring in app.py."""
