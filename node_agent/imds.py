"""The instance's id and region from the EC2 instance metadata service, IMDSv2 only.

IMDSv2 asks for a session token first (a PUT), then every GET carries it; instances launched
with ``HttpTokens=required`` refuse anything else.
"""

from __future__ import annotations

import urllib.error
import urllib.request

DEFAULT_IMDS_URL = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600

# No proxy: the metadata service is link-local and a proxy from the environment would break it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MetadataError(Exception):
    """The metadata service did not answer (not on EC2, IMDS disabled, hop limit, timeout)."""


class InstanceMetadata:
    def __init__(self, base_url: str = DEFAULT_IMDS_URL, timeout: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _open(self, request: urllib.request.Request) -> str:
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            raise MetadataError(f"{request.get_method()} {request.full_url}: {exc}") from exc

    def token(self) -> str:
        return self._open(
            urllib.request.Request(
                f"{self.base_url}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
            )
        )

    def get(self, path: str, token: str | None = None) -> str:
        """``/latest/meta-data/<path>``, with a fresh token unless one is given."""
        token = token if token is not None else self.token()
        return self._open(
            urllib.request.Request(
                f"{self.base_url}/latest/meta-data/{path}",
                headers={"X-aws-ec2-metadata-token": token},
            )
        ).strip()

    def instance_id(self) -> str:
        return self.get("instance-id")

    def region(self) -> str:
        return self.get("placement/region")
