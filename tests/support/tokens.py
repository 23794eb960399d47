"""Tokens the tests sign themselves: HS256 with a shared secret, and RS256 with a key pair
whose public half a real JWKS endpoint (an http.server thread on 127.0.0.1) serves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

JWT_SECRET = "test-jwt-secret-of-at-least-32-bytes!"
ISSUER = "https://idp.example.test/"
AUDIENCE = "quorra-api"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "role": "admin", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300} | overrides


def hs256(secret: str = JWT_SECRET, *, without: tuple[str, ...] = (), **overrides: Any) -> str:
    """A token signed with `secret`: the standard claims, changed by `overrides`, less `without`."""
    body = {name: value for name, value in claims(**overrides).items() if name not in without}
    return jwt.encode(body, secret, algorithm="HS256")


@dataclass
class Jwks:
    """A JWKS endpoint with one RSA key (kid 'k1'); `requests` counts its fetches."""

    url: str
    private_key: Any
    kid: str = "k1"
    requests: list[str] = field(default_factory=list)

    def rs256(self, kid: str | None = None, **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), self.private_key, algorithm="RS256", headers={"kid": kid or self.kid})


@contextmanager
def jwks_server() -> Iterator[Jwks]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    body = json.dumps({"keys": [public | {"kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()
    holder: dict[str, Jwks] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            holder["jwks"].requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["jwks"] = Jwks(f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", private_key)
    thread = threading.Thread(target=server.serve_forever, name="test-jwks", daemon=True)
    thread.start()
    try:
        yield holder["jwks"]
    finally:
        server.shutdown()
        server.server_close()
