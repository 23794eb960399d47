"""JWT bearer tokens (`Authorization: Bearer <jwt>`, or gRPC `authorization` metadata): a
resolver for the Authenticator, enabled by QUORRA_JWT_SECRET (HS256/384/512, a shared
secret) and/or QUORRA_JWT_JWKS_URL (RS*, PS*, ES* and EdDSA, public keys fetched from the
identity provider's JWKS and cached by PyJWT's PyJWKClient).

A token must carry `exp` and `sub`, verify, and match QUORRA_JWT_ISSUER and
QUORRA_JWT_AUDIENCE when they are set (a token naming an audience is refused when none is
configured), within QUORRA_JWT_LEEWAY of clock skew. Its role comes from the claim named
by QUORRA_JWT_ROLE_CLAIM (a dotted path such as `realm_access.roles` reaches into nested
claims; a list of roles counts as its strongest known one), its tenant from
QUORRA_JWT_TENANT_CLAIM (absent: the default tenant; "*", every tenant, only with the worker
role, as for managed keys). A token that fails any of this is
refused (401) with the reason, never passed on to another resolver.

The algorithm families never mix: an HS* token is checked only against the secret, an
asymmetric one only against the JWKS, so a public key can never be used as an HMAC secret
(the classic algorithm-confusion attack), and `none` is never accepted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import jwt

from quorra.access import ALL_TENANTS, DEFAULT_TENANT, Credential, Principal, Role, check_tenant_of_role
from quorra.config import Settings
from quorra.errors import AuthUnavailable, NotAuthenticated
from quorra.jobs import MAX_QUEUE_CHARS, is_valid_name

logger = logging.getLogger(__name__)

SECRET_ALGORITHMS = ("HS256", "HS384", "HS512")
JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_TIMEOUT_SECONDS = 5.0
MAX_TOKEN_CHARS = 16 * 1024
# An accepted token is remembered (by its sha256) for at most this long, and never past its exp.
ACCEPTED_SECONDS = 60.0
MAX_ACCEPTED = 10_000
# The strongest first: a token listing several roles gets the first of these it lists.
ROLE_STRENGTH = (Role.ADMIN, Role.OPERATOR, Role.PRODUCER, Role.WORKER, Role.VIEWER)


def looks_like_jwt(credential: str) -> bool:
    """Three base64url parts with a JSON header ('eyJ' is '{"' encoded): a JWT, not a key."""
    return credential.startswith("eyJ") and credential.count(".") == 2 and len(credential) <= MAX_TOKEN_CHARS


class JwtResolver:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._accepted: dict[bytes, tuple[Principal, float]] = {}  # sha256(token) -> (principal, until)
        self.jwks = (
            jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_keys=True,
                lifespan=settings.jwt_jwks_cache_seconds,
                timeout=JWKS_TIMEOUT_SECONDS,
            )
            if settings.jwt_jwks_url
            else None
        )

    @staticmethod
    def enabled(settings: Settings) -> bool:
        return bool(settings.jwt_secret or settings.jwt_jwks_url)

    def __call__(self, credential: Credential) -> Principal | None:
        """Only bearer credentials (Authorization: Bearer, gRPC `authorization`) are tokens."""
        if credential.kind != "bearer" or not looks_like_jwt(credential.value):
            return None
        digest = hashlib.sha256(credential.value.encode()).digest()
        cached = self._accepted.get(digest)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        try:
            claims = self._verified_claims(credential.value)
        except jwt.PyJWTError as exc:
            reason = _reason(exc, self.settings)
            logger.info("token refused", extra={"event": "auth.token_refused", "reason": reason})
            raise NotAuthenticated(f"the bearer token is not accepted: {reason}") from None
        principal = self._principal(claims)
        self._remember(digest, principal, claims["exp"])
        return principal

    def _remember(self, digest: bytes, principal: Principal, expires: object) -> None:
        """Keep an accepted token until its exp (plus the leeway), at most ACCEPTED_SECONDS:
        a worker sends the same token on every call, and verifying it (parsing, a signature)
        costs far more than a dict lookup. Only accepted tokens are kept, in a bounded dict."""
        if not isinstance(expires, int | float):
            return
        until = min(float(expires) + self.settings.jwt_leeway_seconds, time.time() + ACCEPTED_SECONDS)
        if len(self._accepted) >= MAX_ACCEPTED:
            self._accepted.clear()
        self._accepted[digest] = (principal, until)

    def _verified_claims(self, token: str) -> dict[str, Any]:
        algorithm = jwt.get_unverified_header(token).get("alg")
        key, algorithms = self._key_for(token, algorithm)
        return jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=self.settings.jwt_audience,
            issuer=self.settings.jwt_issuer,
            leeway=self.settings.jwt_leeway_seconds,
            options={"require": ["exp", "sub"], "verify_aud": True},
        )

    def _key_for(self, token: str, algorithm: object) -> tuple[Any, tuple[str, ...]]:
        if algorithm in SECRET_ALGORITHMS and self.settings.jwt_secret:
            return self.settings.jwt_secret, SECRET_ALGORITHMS
        if algorithm in JWKS_ALGORITHMS and self.jwks is not None:
            try:
                return self.jwks.get_signing_key_from_jwt(token), JWKS_ALGORITHMS
            except jwt.PyJWKClientConnectionError as exc:
                logger.warning("jwks unreachable", extra={"event": "auth.jwks_unreachable", "error": str(exc)[:300]})
                raise AuthUnavailable() from None
        raise jwt.InvalidAlgorithmError(f"tokens signed with {algorithm!r} are not accepted here")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or not subject.isprintable():
            raise NotAuthenticated("the bearer token is not accepted: its sub claim is not a printable string")
        role = _role(claim_at(claims, self.settings.jwt_role_claim), self.settings.jwt_role_claim)
        tenant = self._tenant(claims, role)
        name = claims.get("name")
        if not isinstance(name, str) or not name.isprintable():
            name = subject
        issuer = claims.get("iss") if isinstance(claims.get("iss"), str) else ""
        # the same subject of the same issuer shares its idempotency keys across its tokens
        scope = hashlib.sha256(f"jwt:{issuer}:{subject}".encode()).hexdigest()
        return Principal(f"jwt:{subject}", name, role, tenant, idempotency_scope=scope)

    def _tenant(self, claims: dict[str, Any], role: Role) -> str:
        claim = self.settings.jwt_tenant_claim
        tenant = claim_at(claims, claim)
        if tenant is None:
            return DEFAULT_TENANT
        if tenant != ALL_TENANTS and not is_valid_name(tenant, MAX_QUEUE_CHARS):
            raise NotAuthenticated(f"the bearer token is not accepted: its {claim} claim is not a tenant name")
        try:
            check_tenant_of_role(tenant, role)
        except ValueError as exc:
            raise NotAuthenticated(f"the bearer token is not accepted: its {claim} claim: {exc}") from None
        return tenant


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """claims['a']['b'] for 'a.b'; a claim whose own name holds a dot is found first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _role(value: Any, claim: str) -> Role:
    given = value if isinstance(value, list) else [value]
    for role in ROLE_STRENGTH:
        if role.value in given:
            return role
    known = ", ".join(r.value for r in ROLE_STRENGTH)
    raise NotAuthenticated(f"the bearer token is not accepted: its {claim} claim names no role ({known})")


def _reason(exc: jwt.PyJWTError, settings: Settings) -> str:
    """Why a token was refused, in words a client can act on (never the token itself)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "it has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "it is not valid yet (nbf or iat in the future)"
    if isinstance(exc, jwt.InvalidAudienceError):
        wanted = settings.jwt_audience
        return f"its audience (aud) is not {wanted!r}" if wanted else "it names an audience (aud) but none is accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"its issuer (iss) is not {settings.jwt_issuer!r}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "its signature does not verify"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"it has no {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return str(exc)
    if isinstance(exc, jwt.PyJWKClientError):
        return "no key of the identity provider's JWKS matches its kid"
    if isinstance(exc, jwt.DecodeError):
        return "it is not a well-formed JWT"
    return f"it is invalid ({type(exc).__name__})"
