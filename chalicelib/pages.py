"""HTML pages for people with a browser. URLs are relative: API Gateway adds a stage prefix."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
code{background:#f3f3f3;padding:0 .2rem}
"""

_TOKEN_FORM = """
<form id="token-form">
  <label>API token <input id="token" type="password" autocomplete="off" required></label>
  <button type="submit">Use this token</button>
</form>
<script>
document.getElementById('token-form').addEventListener('submit', function (event) {
  event.preventDefault();
  var secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = 'scaler_token=' + encodeURIComponent(document.getElementById('token').value)
    + '; SameSite=Strict; path=/' + secure;
  location.reload();
});
</script>
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def home_page(status: dict[str, Any]) -> str:
    """The start page: pool size, mode, links to the JSON and HTML views, and the token form."""
    return _page(
        "memcache pool auto-scaler",
        f"<p>Pool size <strong id=pool-size>{status['pool_size']}</strong>, "
        f"auto mode <strong id=auto-mode>{'on' if status['auto_mode'] else 'off'}</strong>.</p>"
        "<ul>"
        '<li><a href="api/scaler/list">Instances</a></li>'
        '<li><a href="api/scaler/config">Config (JSON)</a></li>'
        '<li><a href="api/scaler/cache_list">Node list (JSON)</a></li>'
        '<li><a href="api/scaler/history">History (JSON)</a></li>'
        "</ul>"
        "<p>Every page but this one needs the API token: a bearer header, or, in this browser, "
        "the cookie the form below sets.</p>" + _TOKEN_FORM,
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
        f'<p><a href="../../">Home</a></p><table id=instances><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>{empty}",
    )
