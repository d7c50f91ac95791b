"""HTML pages for people with a browser, and the dashboard's static assets.

Every URL in a page is relative, never with a leading slash: API Gateway serves the app under a
stage prefix (``https://…/api/``), so ``assets/dashboard.js`` resolves under it and ``/assets/…``
would not. The dashboard itself is static HTML; ``static/dashboard.js`` fills it from the JSON API.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from chalicelib.domain.config import FIELDS, POLICIES, Field
from chalicelib.domain.floors import DAYS

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Chart.js 4.5.1 (MIT): dist/chart.umd.min.js of `npm pack chart.js@4.5.1`, byte for byte (sha256
# 48444a82d4edcb5bec0f1965faacdde18d9c17db3063d042abada2f705c9f54a); its licence header is line 1-6.
CHART_JS = "chart-4.5.1.umd.min.js"
DASHBOARD_JS = "dashboard.js"
DASHBOARD_CSS = "dashboard.css"
# The only files GET /assets/{name} serves: a name is looked up here, never joined to a path.
ASSET_NAMES = (CHART_JS, DASHBOARD_JS, DASHBOARD_CSS)
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

# At the stage root API Gateway answers both ``/api`` and ``/api/``; relative URLs need the slash.
_TRAILING_SLASH_SCRIPT = (
    "if(!location.pathname.endsWith('/'))"
    "location.replace(location.pathname+'/'+location.search+location.hash);"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_TRAILING_SLASH_SCRIPT.encode()).digest()).decode()
# Sent with the dashboard: scripts and styles from the app only, API calls to the app only.
CONTENT_SECURITY_POLICY = (
    f"default-src 'self'; script-src 'self' 'sha256-{_SCRIPT_HASH}'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
code{background:#f3f3f3;padding:0 .2rem}
"""


@dataclass(frozen=True)
class Asset:
    body: str
    content_type: str
    version: str  # from the content: asset URLs carry it, so a browser never runs a stale copy


@functools.cache
def _load(name: str) -> Asset:
    body = (STATIC_DIR / name).read_text(encoding="utf-8")
    version = hashlib.sha256(body.encode("utf-8")).hexdigest()[:12]
    return Asset(body, _CONTENT_TYPES[Path(name).suffix], version)


def asset(name: str) -> Asset | None:
    """The static file called ``name``, or None unless it is on the allow-list."""
    return _load(name) if name in ASSET_NAMES else None


def _asset_url(name: str) -> str:
    return f"assets/{name}?v={_load(name).version}"


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _config_control(name: str, field: Field) -> str:
    """One input of the config form; ``dashboard.js`` reads ``data-kind`` to send the right type."""
    attributes = f'id="config-{name}" name="{name}" data-kind="{field.kind}"'
    if field.kind == "boolean":
        return f"<input type=checkbox {attributes}>"
    if field.kind == "choice":
        # A nullable choice's empty option is null: unset (the select sends it as null).
        unset = '<option value="">(unset)</option>' if field.nullable else ""
        options = "".join(f"<option>{escape(policy)}</option>" for policy in POLICIES)
        nullable = " data-nullable" if field.nullable else ""
        return f"<select {attributes}{nullable}>{unset}{options}</select>"
    mode = "numeric" if field.kind == "integer" else "decimal" if field.kind == "number" else "text"
    # Text, not type=number: whatever is typed goes to the API, whose 400 says what is wrong.
    return f"<input type=text inputmode={mode} autocomplete=off spellcheck=false {attributes}>"


def _floors_control(name: str, field: Field) -> str:
    """The scheduled floors' editor: a row per window (``dashboard.js`` adds, fills and reads
    them from ``template#floor-row``), across the form's width."""
    day_boxes = "".join(
        f'<label class="day"><input type=checkbox class="floor-day" value="{day}">{day}</label>'
        for day in DAYS
    )
    row = (
        "<tr>"
        '<td><input type=text class="floor-start" placeholder="18:00" size=5 autocomplete=off '
        'aria-label="start (UTC, HH:MM)"></td>'
        '<td><input type=text class="floor-duration" inputmode=numeric size=5 autocomplete=off '
        'aria-label="duration in minutes"></td>'
        '<td><input type=text class="floor-size" inputmode=numeric size=2 autocomplete=off '
        'aria-label="min_pool_size while open"></td>'
        f'<td><span class="days" role="group" aria-label="days (none: every day)">{day_boxes}</span></td>'
        '<td><button type="button" class="floor-remove">Remove</button></td>'
        "</tr>"
    )
    return (
        f'<fieldset id="config-{name}" name="{name}" data-kind="{field.kind}" class="floors">'
        f"<legend>{escape(name)}</legend>"
        "<table><thead><tr><th>start (UTC)</th><th>minutes</th><th>min_pool_size</th>"
        "<th>days (none ticked: every day)</th><th></th></tr></thead><tbody></tbody></table>"
        f'<template id="floor-row">{row}</template>'
        '<p><button type="button" id="floor-add">Add a window</button> '
        f"<small>{escape(field.rule_text)}; while open, min_pool_size is the highest open "
        "window's (at most max_pool_size)</small></p></fieldset>"
    )


def _config_form() -> str:
    rows = "".join(
        _floors_control(name, field)
        if field.kind == "floors"
        else f'<label for="config-{name}">{escape(name)}</label>{_config_control(name, field)}'
        f"<small>{escape(field.rule_text)}</small>"
        for name, field in FIELDS.items()
    )
    return (
        f'<form id="config-form" novalidate><div class="fields">{rows}</div>'
        '<p><button type="submit" id="config-save">Save</button> '
        '<button type="button" id="config-revert">Revert</button></p>'
        '<p id="config-message" class="message" role="status" aria-live="polite"></p></form>'
    )


def _chart(ident: str, title: str) -> str:
    return (
        f'<figure><figcaption>{escape(title)}</figcaption><div class="chart">'
        f'<canvas id="{ident}-chart" data-ticks="0" role="img" aria-label="{escape(title)}"></canvas></div>'
        f'<p id="{ident}-summary" class="summary"></p></figure>'
    )


_HISTORY_MINUTES = (("15", "15 minutes"), ("60", "1 hour"), ("180", "3 hours"), ("720", "12 hours"))


def home_page() -> str:
    """The dashboard: static HTML, filled and refreshed by ``static/dashboard.js``."""
    minutes = "".join(
        f'<option value="{value}"{" selected" if value == "60" else ""}>{label}</option>'
        for value, label in _HISTORY_MINUTES
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<script>{_TRAILING_SLASH_SCRIPT}</script>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<title>memcache pool auto-scaler</title><link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{_asset_url(DASHBOARD_CSS)}">'
        f'<script src="{_asset_url(CHART_JS)}" defer></script>'
        f'<script src="{_asset_url(DASHBOARD_JS)}" defer></script>'
        "</head><body>"
        '<header><h1>memcache pool auto-scaler</h1><p id="refresh-status" role="status"></p>'
        '<button type="button" id="refresh-pause" aria-pressed="false" hidden>Pause updates</button>'
        '<button type="button" id="forget-token" hidden>Forget token</button></header>'
        "<noscript><p>This dashboard needs JavaScript. The JSON API works without it.</p></noscript>"
        '<form id="token-form" hidden>'
        '<label for="token">API token</label> '
        '<input id="token" type="password" autocomplete="off" required> '
        '<button type="submit">Use this token</button>'
        '<p id="token-message" role="alert"></p>'
        "<p>The token is kept in a cookie for this browser session, so that the other pages "
        "open in this browser too.</p></form>"
        '<main id="dashboard" hidden>'
        '<section id="charts"><h2>Over time</h2>'
        '<p><label for="history-minutes">Last</label> '
        f'<select id="history-minutes">{minutes}</select> of ticks (UTC)</p>'
        f'<div class="charts">{_chart("miss-rate", "Miss rate")}{_chart("pool-size", "Pool size")}</div>'
        "</section>"
        '<section id="pool"><h2>Pool</h2><p id="pool-summary"></p>'
        '<table id="pool-table"><thead><tr><th>index</th><th>id</th><th>ip</th><th>state</th>'
        "<th>in this state</th><th>deadline</th></tr>"
        "</thead><tbody></tbody></table>"
        '<p><a href="api/scaler/list">Instances</a> (EC2 details) · '
        '<a href="api/scaler/cache_list">Node list (JSON)</a> · '
        '<a href="api/scaler/history">History (JSON)</a></p></section>'
        f'<section id="config"><h2>Config</h2>{_config_form()}</section>'
        "<section><h2>Recent decisions</h2>"
        '<table id="decisions"><thead><tr><th>time</th><th>action</th><th>miss rate</th>'
        "<th>size</th><th>reason</th><th>shadow: what it would have done</th></tr></thead>"
        "<tbody></tbody></table></section>"
        "</main></body></html>"
    )


def _cell(value: Any) -> str:
    return "" if value is None else escape(str(value))


def instances_page(instances: list[dict[str, Any]]) -> str:
    """``/api/scaler/list`` as a table."""
    columns = ["index", "id", "state", "ip", "instance_type", "launched_at", "ec2_state"]
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(column))}</td>" for column in columns) + "</tr>"
        for row in instances
    )
    empty = "" if instances else "<p>The pool has no instances.</p>"
    return _page(
        "Pool instances",
        f'<p><a href="../../">Dashboard</a></p><table id=instances><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>{empty}",
    )
