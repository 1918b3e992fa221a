"""JWT issue and verification, the key ring and the JWKS. The only module that imports PyJWT.

Verification follows RFC 8725: one algorithm per key and the decoder allows exactly that one;
the `kid` picks the key and `jwk`/`jku`/`x5u`/`x5c` headers are never consulted; `typ`
separates access tokens (`at+jwt`, RFC 9068) from refresh tokens (`rt+jwt`), and their `aud`
differs too, so neither can pass as the other even at a verifier that skips `typ`.

The compact serialization is parsed here. Ed25519 signs and verifies through libsodium
(PyNaCl): 1.7x OpenSSL's speed for both here (benchmarks/run.py's jwt figures), and stricter,
refusing small-order keys and non-canonical points RFC 8032 lets OpenSSL accept. ES256 goes
through PyJWT's algorithm object, HS256 through the stdlib's HMAC:
`jwt.decode` spent ~75 % of an HS256 verify checking the base64url alphabet one character at
a time, twice (benchmarks/run.py). tests/test_tokens.py checks, one mutation at a time, that
this parser never accepts a token PyJWT's full decode refuses. Every failure is `InvalidToken`
(or `TokenExpired`) with a reason.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import jwt
import nacl.bindings
import nacl.exceptions
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from .errors import ConfigurationError, InvalidToken, TokenExpired
from .types import Clock, utc_now

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "REFRESH_TOKEN_TYPE",
    "RESERVED_CLAIMS",
    "AccessClaims",
    "KeyRing",
    "RefreshClaims",
    "SigningKey",
    "TokenCodec",
    "TokenConfig",
    "VerificationKey",
]

Algorithm = Literal["EdDSA", "ES256", "HS256"]
DEFAULT_ISSUER = "accounts-server"
DEFAULT_AUDIENCE = "accounts-server/api"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
REFRESH_TOKEN_TYPE = "rt+jwt"  # noqa: S105
#: Claims the server owns; `create_jwt_payload` may not set them.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "act", "typ", "scope", "client_id"}
    | {"amr", "auth_time"}
)
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]
#: Longer than any token we issue with a generous payload; refuse before parsing anything.
_MAX_TOKEN_LENGTH = 8192
_MIN_SECRET_BYTES = 32
#: Three non-empty base64url segments, nothing else (no padding, no whitespace, ASCII only).
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)
_DETERMINISTIC_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that only verifies: one `kid`, one algorithm, parsed once. What a service holding
    only the JWKS has (`from_jwk`); the server's own keys are `SigningKey`s."""

    kid: str
    algorithm: Algorithm
    verifier: Any = field(repr=False)
    #: An Ed25519 public key's 32 bytes, as libsodium takes it (computed once, here).
    _raw_public: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        """Refuse what RFC 8725 §3.1/§3.5 warn about, whichever constructor was used."""
        if self.algorithm == "HS256":
            raw = self.verifier
            if not isinstance(raw, bytes):
                raise ConfigurationError("an HS256 key is one secret of bytes")
            if raw == b"secret":
                raise ConfigurationError(
                    "the accounts-js default secret 'secret' is refused; use 32+ random bytes"
                )
            if len(raw) < _MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"an HS256 secret must be at least {_MIN_SECRET_BYTES} bytes, got {len(raw)}"
                )
        elif self.algorithm == "EdDSA":
            if not isinstance(self.verifier, ed25519.Ed25519PublicKey):
                raise ConfigurationError("an EdDSA key must be an Ed25519 key")
            raw_public = self.verifier.public_bytes_raw()
            # The identity and other small-order points verify forged signatures under
            # OpenSSL (S=0 signs every message for the identity): refuse them as keys.
            if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw_public):
                raise ConfigurationError(
                    "an Ed25519 public key must be a point of the prime-order subgroup "
                    "(this one is of small order: it would verify forged signatures)"
                )
            object.__setattr__(self, "_raw_public", raw_public)
        elif self.algorithm == "ES256":
            if not isinstance(self.verifier, ec.EllipticCurvePublicKey) or not isinstance(
                self.verifier.curve, ec.SECP256R1
            ):
                raise ConfigurationError("an ES256 key must be a P-256 key")
        else:
            raise ConfigurationError(
                f"algorithm {self.algorithm!r} is refused; use EdDSA, ES256 or HS256"
            )

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerificationKey:
        """A key from a published JWK (an `OKP`/Ed25519 or `EC`/P-256 public key).

        Raises:
            ConfigurationError: not such a key, or its `alg`/`kid` missing or unsupported.
        """
        kid, algorithm = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str) or algorithm not in ("EdDSA", "ES256") or "d" in jwk:
            raise ConfigurationError(
                "a JWK needs a kid and alg EdDSA or ES256, and no private part"
            )
        try:
            public = jwt.PyJWK(dict(jwk)).key
        except jwt.PyJWTError as exc:
            raise ConfigurationError(f"unreadable JWK: {exc}") from exc
        return VerificationKey(kid=kid, algorithm=algorithm, verifier=public)

    def public_jwk(self) -> dict[str, Any] | None:
        """The JWK to publish, or None for a symmetric secret (never published)."""
        if self.algorithm == "HS256":
            return None
        return {**_jwk(self.verifier), "kid": self.kid, "alg": self.algorithm, "use": "sig"}


@dataclass(frozen=True, slots=True)
class SigningKey(VerificationKey):
    """A key that signs too. Build with `generate`, `from_pem`, `from_file` or `from_secret`."""

    signer: Any = field(repr=False, kw_only=True)
    #: An Ed25519 private key as libsodium takes it: seed, then public key (64 bytes).
    _raw_secret: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        VerificationKey.__post_init__(self)
        if self.algorithm == "HS256":
            ok = self.signer == self.verifier
        elif self.algorithm == "EdDSA":
            ok = isinstance(self.signer, ed25519.Ed25519PrivateKey) and (
                self.signer.public_key() == self.verifier
            )
            if ok:
                secret = self.signer.private_bytes_raw() + self._raw_public
                object.__setattr__(self, "_raw_secret", secret)
        else:
            ok = isinstance(self.signer, ec.EllipticCurvePrivateKey)
        if not ok:
            raise ConfigurationError(f"the private part is not a {self.algorithm} key for it")

    @classmethod
    def generate(cls, algorithm: Literal["EdDSA", "ES256"] = "EdDSA") -> SigningKey:
        if algorithm == "EdDSA":
            return cls._from_private(ed25519.Ed25519PrivateKey.generate())
        if algorithm == "ES256":
            return cls._from_private(ec.generate_private_key(ec.SECP256R1()))
        raise ConfigurationError(f"cannot generate a key for algorithm {algorithm!r}")

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        """Load a PKCS#8 private key: Ed25519 (EdDSA) or P-256 (ES256).

        Raises:
            ConfigurationError: not a private key of a supported type.
        """
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"not a readable PEM private key: {exc}") from exc
        if not isinstance(key, _PrivateKey):
            raise ConfigurationError("only Ed25519 and P-256 (ES256) private keys are supported")
        return cls._from_private(key)

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        return cls.from_pem(Path(path).read_bytes())

    @classmethod
    def from_secret(cls, secret: str | bytes) -> SigningKey:
        """HS256, for when the issuer is also the only verifier.

        Raises:
            ConfigurationError: the accounts-js default 'secret', or under 256 bits (RFC 7518 §3.2).
        """
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        kid = "hs-" + hashlib.sha256(b"accounts-server kid\0" + raw).hexdigest()[:16]
        return cls(kid=kid, algorithm="HS256", verifier=raw, signer=raw)

    @classmethod
    def _from_private(cls, key: _PrivateKey) -> SigningKey:
        algorithm: Algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
        public = key.public_key()
        return cls(kid=_thumbprint(public), algorithm=algorithm, verifier=public, signer=key)

    def private_pem(self) -> bytes:
        if self.algorithm == "HS256":
            raise ConfigurationError("only an asymmetric private key has a PEM form")
        return cast("_PrivateKey", self.signer).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _refresh_key(key: SigningKey) -> SigningKey:
    """The HMAC key that signs this signing key's refresh tokens, derived from its private
    part (HKDF-SHA256, RFC 5869): a refresh token is only ever verified by its issuer, so it
    needs no asymmetric signature, and a derived key lives, rotates and is dropped with the
    key it comes from (no second file to lose). One-way: it reveals nothing of the signing
    key, and it is never published."""
    secret = cast("bytes", key.signer) if key.algorithm == "HS256" else key.private_pem()
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"accounts-server refresh key v1"
    ).derive(secret)
    return SigningKey(kid=f"rt.{key.kid}", algorithm="HS256", verifier=derived, signer=derived)


def _jwk(public: Any) -> dict[str, Any]:
    if isinstance(public, ed25519.Ed25519PublicKey):
        return OKPAlgorithm.to_jwk(public, as_dict=True)
    return ECAlgorithm.to_jwk(public, as_dict=True)


def _thumbprint(public: Any) -> str:
    """RFC 7638 thumbprint: stable across restarts, so tokens keep naming their key."""
    jwk = _jwk(public)
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y") if k in jwk}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return _b64encode(digest.digest()).decode()


class KeyRing:
    """The first key signs; every key verifies, so a rotated-out key keeps verifying the tokens
    it signed until the operator drops it (after the refresh lifetime has passed). A ring built
    `from_jwks` only verifies.

    Raises:
        ConfigurationError: no key, or two keys with one `kid`.
    """

    def __init__(self, keys: Sequence[VerificationKey]) -> None:
        if not keys:
            raise ConfigurationError("a key ring needs at least one key")
        self._by_kid = {key.kid: key for key in keys}
        if len(self._by_kid) != len(keys):
            raise ConfigurationError("two keys in the key ring share a kid")
        #: The key that signs, or None for a ring that only verifies.
        self.signing = keys[0] if isinstance(keys[0], SigningKey) else None

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self._by_kid.values())

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeyRing:
        """Verify-only keys from a JWKS document; keys of other types are skipped.

        Raises:
            ConfigurationError: no usable key in it.
        """
        keys = []
        for jwk in jwks.get("keys", []) if isinstance(jwks, Mapping) else []:
            try:
                keys.append(VerificationKey.from_jwk(jwk))
            except (ConfigurationError, TypeError, AttributeError):
                continue
        return cls(keys)

    def get(self, kid: str) -> VerificationKey | None:
        return self._by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk for key in self._by_kid.values() if (jwk := key.public_jwk())]}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenConfig:
    """How tokens are signed and checked. Refused at construction when unsafe.

    Raises:
        ConfigurationError: a lifetime or leeway out of range, or an empty issuer/audience.
    """

    keys: KeyRing
    issuer: str = DEFAULT_ISSUER
    #: The access token's audience; the refresh token's is the issuer itself.
    audience: str = DEFAULT_AUDIENCE
    access_lifetime: timedelta = timedelta(minutes=15)
    leeway: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if not (timedelta(minutes=1) <= self.access_lifetime <= timedelta(minutes=60)):
            raise ConfigurationError("access_lifetime must be between 1 and 60 minutes")
        if not (timedelta(0) <= self.leeway <= timedelta(seconds=60)):
            raise ConfigurationError("leeway must be between 0 and 60 seconds")
        if not self.issuer or not self.audience:
            raise ConfigurationError("issuer and audience must be non-empty")
        if self.issuer == self.audience:
            raise ConfigurationError("audience must differ from issuer (the refresh audience)")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    #: The impersonator's user id (RFC 8693 `act.sub`), when impersonating.
    actor: str | None
    claims: Mapping[str, Any]
    #: How the user authenticated (RFC 8176): `("pwd",)`, `("mfa", "otp", "pwd")`, ...
    amr: tuple[str, ...] = ()
    #: When the user authenticated (OpenID Connect Core §2), seconds since the epoch; a
    #: refresh keeps it, so a route can ask for a recent sign-in.
    auth_time: int | None = None

    @property
    def mfa(self) -> bool:
        """Whether the sign-in used more than one factor (RFC 8176 `mfa`)."""
        return "mfa" in self.amr


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    sub: str
    sid: str
    jti: str
    iat: int
    exp: int


class TokenCodec:
    """Issues and verifies the server's two token types with one `TokenConfig`.

    Verified access tokens are remembered (bounded, LRU, keyed by the exact token string) until
    their `exp`: a client presents one access token many times, and a hit costs a dictionary
    lookup instead of a parse and a signature check. Only those checks are skipped on a hit;
    the session and user are still checked on every request by the server, so revocation holds.
    """

    def __init__(
        self,
        config: TokenConfig,
        *,
        clock: Clock = utc_now,
        cache_size: int = 4096,
    ) -> None:
        self.config = config
        self._clock = clock
        self._leeway = config.leeway.total_seconds()
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()
        self._cache_size = cache_size
        #: Refresh tokens are signed with HMAC keys derived from the ring's signing keys
        #: (the first signs, all verify); tokens the ring's keys signed directly (before
        #: these keys existed) still verify until they expire.
        self._refresh_keys = {
            derived.kid: derived
            for derived in (_refresh_key(k) for k in config.keys if isinstance(k, SigningKey))
        }
        signing = config.keys.signing
        self._refresh_signing = None if signing is None else _refresh_key(signing)

    def issue_access(
        self,
        *,
        subject: str,
        session_id: str,
        jti: str,
        issued_at: datetime,
        expires_at: datetime,
        actor: str | None = None,
        extra: Mapping[str, Any] | None = None,
        amr: Sequence[str] = (),
        auth_time: datetime | None = None,
    ) -> str:
        """Raises:
        ConfigurationError: `extra` tries to set a reserved claim.
        """
        payload: dict[str, Any] = {}
        if extra:
            clash = RESERVED_CLAIMS.intersection(extra)
            if clash:
                raise ConfigurationError(
                    f"create_jwt_payload may not set reserved claims: {sorted(clash)}"
                )
            payload.update(extra)
        payload.update(
            iss=self.config.issuer,
            sub=subject,
            aud=self.config.audience,
            iat=int(issued_at.timestamp()),
            exp=int(expires_at.timestamp()),
            jti=jti,
            sid=session_id,
            amr=list(amr),
            auth_time=int((auth_time or issued_at).timestamp()),
        )
        if actor is not None:
            payload["act"] = {"sub": actor}
        token = self._encode(payload, ACCESS_TOKEN_TYPE)
        # What this process signed a moment ago needs no verifying: the first request after
        # a login or refresh is a cache hit (the same bounds and expiry as any other entry).
        self._remember(token, _access_claims(payload))
        return token

    def issue_refresh(
        self, *, subject: str, session_id: str, jti: str, issued_at: datetime, expires_at: datetime
    ) -> str:
        payload = {
            "iss": self.config.issuer,
            "sub": subject,
            "aud": self.config.issuer,
            "iat": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "sid": session_id,
        }
        return self._encode(payload, REFRESH_TOKEN_TYPE, self._refresh_signing)

    def verify_access(self, token: object, *, expired_ok: bool = False) -> AccessClaims:
        """`expired_ok` accepts a token whose only fault is its age: a refresh presents the
        access token that has just expired, to prove the pair belongs together.

        Raises:
            InvalidToken: anything wrong; `TokenExpired` when only the time is.
        """
        if isinstance(token, str):
            cached = self._cache.get(token)
            if cached is not None:
                if expired_ok or cached.exp + self._leeway > self._clock().timestamp():
                    self._cache.move_to_end(token)
                    return cached
                del self._cache[token]
                raise TokenExpired()
        claims = self._decode(token, ACCESS_TOKEN_TYPE, self.config.audience, expired_ok)
        verified = _access_claims(claims)
        if isinstance(token, str) and not expired_ok:  # _decode: a str
            self._remember(token, verified)
        return verified

    def _remember(self, token: str, claims: AccessClaims) -> None:
        if self._cache_size:
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def verify_refresh(self, token: object) -> RefreshClaims:
        """Raises:
        InvalidToken: anything wrong; `TokenExpired` when only the time is.
        """
        claims = self._decode(token, REFRESH_TOKEN_TYPE, self.config.issuer, refresh=True)
        return RefreshClaims(
            sub=claims["sub"],
            sid=claims["sid"],
            jti=claims["jti"],
            iat=claims["iat"],
            exp=claims["exp"],
        )

    def check_pair(self, access_token: object, refresh: RefreshClaims, pair_jti: str) -> None:
        """The access token a refresh comes with must be of the refresh token's session and
        user. The (verified) refresh token is the authority here, the access token only a
        consistency check, so the one issued with it is recognised by its `jti` alone:
        `pair_jti`, 128 bits derived from the refresh token's secret id, known only to the
        pair's holder. That costs no asymmetric verify; any other access token is verified
        in full and must name the same session and user.

        Raises:
            InvalidToken: not ours, or of another session or user.
        """
        jti = _unverified_jti(access_token)
        if jti is not None and hmac.compare_digest(jti.encode(), pair_jti.encode()):
            return
        paired = self.verify_access(access_token, expired_ok=True)
        if paired.sid != refresh.sid or paired.sub != refresh.sub:
            raise InvalidToken(reason="pair")

    def jwks(self) -> dict[str, Any]:
        return self.config.keys.jwks()

    def _encode(self, payload: dict[str, Any], typ: str, key: SigningKey | None = None) -> str:
        key = key or self.config.keys.signing
        if key is None:
            raise ConfigurationError("this key ring only verifies (it was built from a JWKS)")
        header = {"alg": key.algorithm, "kid": key.kid, "typ": typ}
        signing_input = _b64encode(orjson.dumps(header)) + b"." + _b64encode(orjson.dumps(payload))
        return (signing_input + b"." + _b64encode(_sign(key, signing_input))).decode("ascii")

    def _decode(
        self,
        token: object,
        typ: str,
        audience: str,
        expired_ok: bool = False,
        *,
        refresh: bool = False,
    ) -> dict[str, Any]:
        """RFC 7515 compact serialization, checked in the order RFC 8725 asks: shape, header
        (kid picks the key, whose one algorithm must be the header's), signature, then claims.
        The parsing is ours (`_sign`/`_verify` hold the primitives), so each segment is
        decoded once and its alphabet checked by one regular expression."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
            raise InvalidToken(reason="malformed")
        if not _COMPACT.fullmatch(token):
            raise InvalidToken(reason="malformed")
        header_segment, payload_segment, signature_segment = token.split(".")
        header = _json_segment(header_segment)
        kid = header.get("kid")
        key: VerificationKey | None = None
        if isinstance(kid, str):
            # Only a refresh token may name a refresh key: an access token never verifies
            # under one, whatever its header says.
            key = (self._refresh_keys.get(kid) if refresh else None) or self.config.keys.get(kid)
        if key is None:
            raise InvalidToken(reason="kid")
        if header.get("alg") != key.algorithm:
            raise InvalidToken(reason="alg")
        if header.get("typ") != typ:
            raise InvalidToken(reason="typ")
        if "crit" in header or "b64" in header:
            raise InvalidToken(reason="crit")
        signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
        signature = _b64decode(signature_segment)
        if not _verify(key, signing_input, signature):
            raise InvalidToken(reason="signature")
        return self._check_claims(_json_segment(payload_segment), audience, expired_ok)

    def _check_claims(
        self, claims: dict[str, Any], audience: str, expired_ok: bool = False
    ) -> dict[str, Any]:
        """Every claim required, typed and exact (RFC 7519 §4.1, RFC 9068 §4): `aud` one string,
        never a list; times integers, not booleans; `exp` past the leeway is TokenExpired."""
        for name in _REQUIRED:
            if name not in claims:
                raise InvalidToken(reason="MissingRequiredClaimError")
        for name in ("sub", "jti", "sid", "iss", "aud"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken(reason="claims")
        amr = claims.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
            raise InvalidToken(reason="claims")
        times = [claims["exp"], claims["iat"], claims.get("nbf", 0), claims.get("auth_time", 0)]
        if any(not isinstance(t, int) or isinstance(t, bool) for t in times):
            raise InvalidToken(reason="claims")
        if claims["iss"] != self.config.issuer:
            raise InvalidToken(reason="InvalidIssuerError")
        if claims["aud"] != audience:
            raise InvalidToken(reason="InvalidAudienceError")
        now = self._clock().timestamp()
        if claims["iat"] > now + self._leeway or claims.get("nbf", 0) > now + self._leeway:
            raise InvalidToken(reason="ImmatureSignatureError")
        if claims["exp"] <= now - self._leeway and not expired_ok:
            raise TokenExpired()
        return claims


def _access_claims(claims: dict[str, Any]) -> AccessClaims:
    """Raises:
    InvalidToken: an `act` claim of the wrong shape.
    """
    act = claims.get("act")
    actor: str | None = None
    if act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            raise InvalidToken(reason="act")
        actor = act["sub"]
    return AccessClaims(
        sub=claims["sub"],
        sid=claims["sid"],
        jti=claims["jti"],
        iat=claims["iat"],
        exp=claims["exp"],
        actor=actor,
        claims=MappingProxyType(claims),
        amr=tuple(claims.get("amr", ())),
        auth_time=claims.get("auth_time"),
    )


def _unverified_jti(token: object) -> str | None:
    """The `jti` a compact token claims, for an exact comparison only; None if unreadable."""
    if (
        not isinstance(token, str)
        or len(token) > _MAX_TOKEN_LENGTH
        or not _COMPACT.fullmatch(token)
    ):
        return None
    try:
        jti = _json_segment(token.split(".")[1]).get("jti")
    except InvalidToken:
        return None
    return jti if isinstance(jti, str) else None


def _sign(key: SigningKey, message: bytes) -> bytes:
    """Deterministic for every algorithm (ES256 by RFC 6979), so the same claims give the same
    token byte for byte: concurrent refreshes inside the grace window get the identical pair."""
    if key.algorithm == "HS256":  # the stdlib's one-shot HMAC: a third of hmac.new's time
        return hmac.digest(key.signer, message, "sha256")
    if key.algorithm == "ES256":  # JWS wants r || s, 32 bytes each (RFC 7518 §3.4), not DER
        r, s = decode_dss_signature(key.signer.sign(message, _DETERMINISTIC_ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    # libsodium's combined form is signature || message (RFC 8032 signatures are 64 bytes).
    return nacl.bindings.crypto_sign(message, key._raw_secret)[:64]


def _verify(key: VerificationKey, message: bytes, signature: bytes) -> bool:
    if key.algorithm == "HS256":
        return hmac.compare_digest(hmac.digest(key.verifier, message, "sha256"), signature)
    if key.algorithm == "ES256":
        return bool(_ES256.verify(message, key.verifier, signature))
    if len(signature) != 64:  # else libsodium would read message bytes as signature
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, key._raw_public)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE)


def _b64decode(segment: str) -> bytes:
    """Canonical base64url only: unused low bits set would give one token two spellings.
    The caller has matched `_COMPACT`, so only the alphabet's characters are here."""
    if len(segment) % 4 == 1:
        raise InvalidToken(reason="malformed")
    encoded = segment.encode("ascii")
    raw = binascii.a2b_base64(encoded.translate(_FROM_URLSAFE) + b"=" * (-len(segment) % 4))
    if _b64encode(raw) != encoded:
        raise InvalidToken(reason="malformed")
    return raw


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64decode(segment))
    except orjson.JSONDecodeError as exc:
        raise InvalidToken(reason="malformed") from exc
    if not isinstance(value, dict):
        raise InvalidToken(reason="malformed")
    return value
