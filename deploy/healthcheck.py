"""Container health check: GET /health on the local proxy; exit 0 when it answers 200, else 1.

Standard library only, so it runs in the final image as is. It reads the same variables as the proxy (port, and
whether TLS is on: then it speaks https without verifying, since it talks to its own process over loopback and the
certificate names the public host).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main() -> int:
    env = os.environ
    port = env.get("PROXY_PORT") or env.get("OPENAI_PROXY_PORT") or "8080"
    tls = bool(env.get("PROXY_TLS_CERT") or env.get("OPENAI_PROXY_TLS_CERT_PATH"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/health"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=context if tls else None) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"health check failed: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
