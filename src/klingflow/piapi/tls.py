"""One TLS context per process for every HTTPS client we make (the PiAPI clients, the
`http.request` node's transport, downloads).

httpx builds a new `ssl.SSLContext` for each client or transport it is not handed one, and
loading certifi's CA bundle into it costs about 30 ms of CPU: an `http.request` node paid that
on every request, a batch of them once per item. A context is safe to share across threads and
event loops; nothing of ours changes it after it is made.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx

__all__ = ["default_ssl_context"]


def default_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR as
    httpx reads them), made once per process for each value of those two variables."""
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    del cert_file, cert_dir  # the cache's key: httpx reads them from the environment itself
    return httpx.create_ssl_context()
