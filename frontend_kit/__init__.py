"""What a web front-end imports to follow the scaler's pool: its notices in, a ketama ring out,
keys moved warm between nodes, drains confirmed.

It depends on nothing of the scaler (no Chalice, no boto3, no ``chalicelib``): a front-end ships it
alone, with pymemcache for ``kit.cache``.
"""

from frontend_kit.api import ScalerApi
from frontend_kit.cache import KitCache
from frontend_kit.moves import MoveReport, Moving, Routing, WarmMover
from frontend_kit.notifications import FrontendKit
from frontend_kit.ring import CacheNode, Ring
from frontend_kit.wsgi import wsgi_app

__all__ = [
    "CacheNode",
    "FrontendKit",
    "KitCache",
    "MoveReport",
    "Moving",
    "Ring",
    "Routing",
    "ScalerApi",
    "WarmMover",
    "wsgi_app",
]
