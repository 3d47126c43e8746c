"""Fail fast when an endpoint cannot be reached, before a job plans hundreds of requests against it.

Only a TCP connect (no HTTP request): it costs nothing on OpenAI, vLLM or a llama.cpp server, and needs
no route to exist. Skipped when a proxy handles the URL (the proxy, not this machine, reaches the host).
"""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request

PREFLIGHT_TIMEOUT = 5.0  # seconds; a refused connection answers at once, this bounds a silent network


def unreachable_reason(url: str, timeout: float = PREFLIGHT_TIMEOUT) -> str | None:
    """None when a TCP connection to the URL's host and port opens (or a proxy is in charge), else why not."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or _proxied(parts.scheme, host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"invalid port in {url}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve host {host!r}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as error:
        return f"cannot connect to {host}:{port} ({error.strerror or error})"


def _proxied(scheme: str, host: str) -> bool:
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)
