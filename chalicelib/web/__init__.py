"""The web layer: Chalice routes, authentication, request bodies, error answers and the dashboard's pages."""
