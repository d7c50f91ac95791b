"""What a web front-end imports to follow the scaler's pool: its notices in, a ketama ring out.

It depends on nothing of the scaler (no Chalice, no boto3, no ``chalicelib``): a front-end ships it
alone.
"""

from frontend_kit.notifications import FrontendKit
from frontend_kit.ring import CacheNode, Ring
from frontend_kit.wsgi import wsgi_app

__all__ = ["CacheNode", "FrontendKit", "Ring", "wsgi_app"]
