"""Token issue and verification, black-box: tokens an attacker could make are refused."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts_server import (
    ConfigurationError,
    InvalidToken,
    KeyRing,
    SessionConfig,
    SigningKey,
    TokenConfig,
    TokenExpired,
    VerificationKey,
)
from accounts_server.tokens import RESERVED_CLAIMS, TokenCodec

from .conftest import Clock
from .helpers import load_key

ED = load_key("ed25519")
OLD = load_key("ed25519-old")
ES = load_key("es256")


def codec(*keys: SigningKey, clock: Clock | None = None, **options: Any) -> TokenCodec:
    """A codec on `keys` (default the Ed25519 test key); `clock` for tests about time."""
    config = TokenConfig(keys=KeyRing(list(keys) or [ED]), **options)
    return TokenCodec(config, clock=clock) if clock else TokenCodec(config)


def access(c: TokenCodec, *, at: datetime | None = None, **extra: Any) -> str:
    now = at or datetime.now(UTC)
    return c.issue_access(
        subject="u1",
        session_id="s1",
        jti=secrets.token_urlsafe(16),
        issued_at=now,
        expires_at=now + timedelta(minutes=15),
        **extra,
    )


def refresh(c: TokenCodec) -> str:
    now = datetime.now(UTC)
    return c.issue_refresh(
        subject="u1",
        session_id="s1",
        jti=secrets.token_urlsafe(32),
        issued_at=now,
        expires_at=now + timedelta(days=1),
    )


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def resign(token: str, key: Any, algorithm: str, **header_changes: Any) -> str:
    """The same claims, signed by someone else."""
    header = {**jwt.get_unverified_header(token), **header_changes}
    header.pop("alg", None)
    return jwt.encode(claims_of(token), key, algorithm=algorithm, headers=header)


class TestIssue:
    def test_access_token_has_the_design_claims_and_header(self) -> None:
        token = access(codec(), actor="admin", extra={"roles": ["a"]})
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": ED.kid}
        claims = claims_of(token)
        assert {"iss", "sub", "aud", "exp", "iat", "jti", "sid"} <= claims.keys()
        assert claims["aud"] == "accounts-server/api" and claims["iss"] == "accounts-server"
        assert claims["act"] == {"sub": "admin"}
        assert claims["roles"] == ["a"]
        assert claims["exp"] - claims["iat"] == 15 * 60
        verified = codec().verify_access(token)
        assert (verified.sub, verified.sid, verified.actor) == ("u1", "s1", "admin")

    def test_refresh_token_has_its_own_type_and_audience(self) -> None:
        token = refresh(codec())
        assert jwt.get_unverified_header(token)["typ"] == "rt+jwt"
        assert claims_of(token)["aud"] == "accounts-server"
        assert codec().verify_refresh(token).sid == "s1"

    @pytest.mark.parametrize(
        "key", [ED, ES, SigningKey.from_secret(b"s" * 32)], ids=["EdDSA", "ES256", "HS256"]
    )
    def test_refresh_tokens_are_hmac_signed_under_a_key_never_published(
        self, key: SigningKey
    ) -> None:
        """Only the issuer verifies a refresh token, so it costs no asymmetric signature: its
        HMAC key is derived from the signing key (another one for each) and not in the JWKS."""
        c = codec(key)
        header = jwt.get_unverified_header(refresh(c))
        assert header == {"alg": "HS256", "kid": f"rt.{key.kid}", "typ": "rt+jwt"}
        assert header["kid"] not in {k["kid"] for k in c.jwks()["keys"]}
        if key.algorithm == "HS256":  # not the access tokens' secret either
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(refresh(c), key.verifier, algorithms=["HS256"], audience="x")
        assert codec(key).verify_refresh(refresh(c)).sid == "s1"  # derived alike each start

    def test_a_refresh_key_never_verifies_an_access_token(self) -> None:
        c = codec()
        header = jwt.get_unverified_header(refresh(c))
        forged = resign(access(c), b"\0" * 32, "HS256", kid=header["kid"])
        with pytest.raises(InvalidToken) as caught:
            c.verify_access(forged)
        assert caught.value.reason == "kid"

    def test_refresh_tokens_signed_the_old_way_keep_working(self) -> None:
        """Before refresh keys, the signing key signed refresh tokens; those still verify."""
        legacy = resign(refresh(codec()), ED.signer, "EdDSA", kid=ED.kid)
        assert codec().verify_refresh(legacy).sid == "s1"

    def test_refresh_keys_rotate_with_the_ring(self) -> None:
        old_token = refresh(codec(OLD))
        assert codec(ED, OLD).verify_refresh(old_token).sid == "s1"
        assert jwt.get_unverified_header(refresh(codec(ED, OLD)))["kid"] == f"rt.{ED.kid}"
        with pytest.raises(InvalidToken) as caught:
            codec(ED).verify_refresh(old_token)
        assert caught.value.reason == "kid"

    @pytest.mark.parametrize("claim", sorted(RESERVED_CLAIMS))
    def test_extra_claims_cannot_override_reserved_ones(self, claim: str) -> None:
        with pytest.raises(ConfigurationError, match="reserved"):
            access(codec(), extra={claim: "x"})

    def test_es256_and_hs256_keys_sign_and_verify(self) -> None:
        hs = SigningKey.from_secret(secrets.token_bytes(32))
        for key in (ES, hs):
            c = codec(key)
            assert jwt.get_unverified_header(access(c))["alg"] == key.algorithm
            assert c.verify_access(access(c)).sub == "u1"

    def test_eddsa_tokens_verify_under_pyjwt_and_any_jwks_verifier(self) -> None:
        """libsodium signs, OpenSSL (through PyJWT) verifies: the tokens are plain RFC 8037."""
        token = access(codec())
        claims = jwt.decode(
            token, ED.verifier, algorithms=["EdDSA"], audience="accounts-server/api"
        )
        assert claims["sub"] == "u1"

    def test_an_eddsa_key_whose_halves_differ_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="not a EdDSA key for it"):
            SigningKey(kid="k", algorithm="EdDSA", verifier=OLD.verifier, signer=ED.signer)


class TestRefusedTokens:
    def test_a_small_order_ed25519_key_is_refused_where_openssl_would_accept_forgeries(
        self,
    ) -> None:
        identity = bytes([1]) + bytes(31)
        signing_input = f"{b64({'alg': 'EdDSA', 'kid': 'k'})}.{b64({'sub': 'admin'})}"
        signature = base64.urlsafe_b64encode(identity + bytes(32)).rstrip(b"=").decode()
        public = ed25519.Ed25519PublicKey.from_public_bytes(identity)
        # Why: PyJWT (OpenSSL) takes S=0 under the identity key as a signature of anything.
        assert jwt.api_jws.decode(f"{signing_input}.{signature}", public, algorithms=["EdDSA"])
        jwk = {"kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "EdDSA"}
        jwk["x"] = base64.urlsafe_b64encode(identity).rstrip(b"=").decode()
        with pytest.raises(ConfigurationError, match="small order"):
            VerificationKey.from_jwk(jwk)

    def test_forged_signature(self) -> None:
        head, body, sig = access(codec()).split(".")
        tampered = f"{head}.{b64({**claims_of(f'{head}.{body}.{sig}'), 'sub': 'admin'})}.{sig}"
        with pytest.raises(InvalidToken):
            codec().verify_access(tampered)

    def test_signed_by_another_key_under_our_kid(self) -> None:
        forged = resign(access(codec()), OLD.signer, "EdDSA")
        with pytest.raises(InvalidToken):
            codec().verify_access(forged)

    def test_alg_none(self) -> None:
        token = access(codec())
        header = {"alg": "none", "typ": "at+jwt", "kid": ED.kid}
        with pytest.raises(InvalidToken):
            codec().verify_access(f"{b64(header)}.{b64(claims_of(token))}.")

    def test_hs256_signed_with_the_public_key_is_refused(self) -> None:
        public_pem = ED.verifier.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        raw = ED.verifier.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        token = access(codec())
        for secret in (public_pem, raw, ED.kid.encode()):
            header = {**jwt.get_unverified_header(token), "alg": "HS256"}
            signing_input = f"{b64(header)}.{b64(claims_of(token))}".encode()
            import hashlib
            import hmac

            sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
            forged = (
                signing_input.decode() + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
            )
            with pytest.raises(InvalidToken) as caught:
                codec().verify_access(forged)
            assert caught.value.reason == "alg"

    def test_unknown_kid(self) -> None:
        with pytest.raises(InvalidToken) as caught:
            codec().verify_access(access(codec(OLD)))
        assert caught.value.reason == "kid"

    def test_embedded_jwk_is_ignored(self) -> None:
        attacker = SigningKey.generate()
        token = access(codec(attacker))
        jwk_header = {"jwk": attacker.public_jwk(), "kid": ED.kid}
        with pytest.raises(InvalidToken):
            codec().verify_access(resign(token, attacker.signer, "EdDSA", **jwk_header))

    def test_refresh_token_is_not_an_access_token_and_vice_versa(self) -> None:
        with pytest.raises(InvalidToken):
            codec().verify_access(refresh(codec()))
        with pytest.raises(InvalidToken):
            codec().verify_refresh(access(codec()))

    def test_refresh_token_retyped_as_access_fails_on_audience(self) -> None:
        retyped = resign(refresh(codec()), ED.signer, "EdDSA", typ="at+jwt", kid=ED.kid)
        with pytest.raises(InvalidToken) as caught:
            codec().verify_access(retyped)
        assert caught.value.reason == "InvalidAudienceError"

    def test_wrong_typ(self) -> None:
        with pytest.raises(InvalidToken) as caught:
            codec().verify_access(resign(access(codec()), ED.signer, "EdDSA", typ="JWT"))
        assert caught.value.reason == "typ"

    def test_expired(self, clock: Clock) -> None:
        c = codec(clock=clock)
        token = access(c, at=clock())
        clock.advance(timedelta(minutes=16))
        with pytest.raises(TokenExpired):
            c.verify_access(token)

    def test_expiry_has_30_seconds_leeway(self, clock: Clock) -> None:
        c = codec(clock=clock)
        token = access(c, at=clock())
        clock.advance(timedelta(minutes=15, seconds=20))
        assert c.verify_access(token).sub == "u1"
        clock.advance(timedelta(seconds=11))
        with pytest.raises(TokenExpired):
            c.verify_access(token)

    def test_wrong_audience_or_issuer(self) -> None:
        for other in (codec(audience="other-api"), codec(issuer="evil")):
            with pytest.raises(InvalidToken):
                codec().verify_access(access(other))

    def test_missing_claim(self) -> None:
        claims = claims_of(access(codec()))
        del claims["jti"]
        header = {"typ": "at+jwt", "kid": ED.kid}
        token = jwt.encode(claims, ED.signer, algorithm="EdDSA", headers=header)
        with pytest.raises(InvalidToken):
            codec().verify_access(token)

    def test_unknown_critical_header(self) -> None:
        forged = resign(access(codec()), ED.signer, "EdDSA", crit=["exp"], exp=1)
        with pytest.raises(InvalidToken):
            codec().verify_access(forged)

    @pytest.mark.parametrize("garbage", ["", "a.b.c", "x" * 10_000, None, 42, ["a"], {"a": 1}])
    def test_garbage(self, garbage: object) -> None:
        with pytest.raises(InvalidToken):
            codec().verify_access(garbage)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=300))
    def test_no_text_is_a_token(self, text: str) -> None:
        with pytest.raises(InvalidToken):
            codec().verify_access(text)


class TestKeys:
    def test_a_ring_from_a_jwks_verifies_and_cannot_sign(self) -> None:
        ring = KeyRing.from_jwks(codec(ED, ES).jwks())
        assert all(type(key) is VerificationKey for key in ring) and ring.signing is None
        verifier = TokenCodec(TokenConfig(keys=ring))
        assert verifier.verify_access(access(codec(ED))).sub == "u1"
        assert verifier.verify_access(access(codec(ES))).sub == "u1"
        with pytest.raises(ConfigurationError, match="only verifies"):
            access(verifier)
        assert not isinstance(VerificationKey.from_jwk(ED.public_jwk() or {}), SigningKey)

    def test_rotation_old_key_keeps_verifying(self) -> None:
        old_token = access(codec(OLD))
        rotated = codec(ED, OLD)
        assert rotated.verify_access(old_token).sub == "u1"
        assert jwt.get_unverified_header(access(rotated))["kid"] == ED.kid
        assert {k["kid"] for k in rotated.jwks()["keys"]} == {ED.kid, OLD.kid}
        with pytest.raises(InvalidToken):
            codec(ED).verify_access(old_token)  # once dropped, it stops verifying

    def test_jwks_publishes_public_keys_only(self) -> None:
        hs = SigningKey.from_secret(secrets.token_bytes(32))
        jwks = codec(ED, ES, hs).jwks()
        assert [k["alg"] for k in jwks["keys"]] == ["EdDSA", "ES256"]
        for key in jwks["keys"]:
            assert "d" not in key and key["use"] == "sig"
            verifier = jwt.PyJWK(key)
            assert verifier.key_id in (ED.kid, ES.kid)

    def test_kid_is_stable_across_loads(self) -> None:
        assert load_key("ed25519").kid == ED.kid
        assert SigningKey.from_pem(ED.private_pem()).kid == ED.kid

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: SigningKey.from_secret("secret"), "'secret' is refused"),
            (lambda: SigningKey.from_secret(b"x" * 31), "at least 32 bytes"),
            (lambda: SigningKey(kid="k", algorithm="none", signer=b"", verifier=b""), "refused"),  # type: ignore[arg-type]
            (
                lambda: SigningKey(kid="k", algorithm="EdDSA", signer=ES.signer, verifier=None),
                "Ed25519",
            ),
            (lambda: SigningKey.from_pem(b"not a key"), "PEM"),
            (lambda: KeyRing([]), "at least one key"),
            (lambda: KeyRing([ED, load_key("ed25519")]), "share a kid"),
            (
                lambda: TokenConfig(keys=KeyRing([ED]), access_lifetime=timedelta(hours=2)),
                "1 and 60",
            ),
            (
                lambda: TokenConfig(keys=KeyRing([ED]), access_lifetime=timedelta(seconds=10)),
                "1 and 60",
            ),
            (lambda: TokenConfig(keys=KeyRing([ED]), audience="accounts-server"), "differ"),
            (lambda: SessionConfig(reuse_grace=timedelta(seconds=31)), "reuse_grace"),
            (lambda: SessionConfig(lifetime=timedelta(days=400)), "lifetime"),
            (lambda: SessionConfig(impersonation_lifetime=timedelta(hours=2)), "impersonation"),
        ],
    )
    def test_unsafe_configuration_is_refused_with_a_clear_message(
        self, make: Any, message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            make()


@settings(max_examples=100, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=64),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in RESERVED_CLAIMS),
        st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.none()),
        max_size=5,
    ),
)
def test_round_trip(subject: str, extra: dict[str, Any]) -> None:
    c = codec()
    now = datetime.now(UTC)
    token = c.issue_access(
        subject=subject,
        session_id="s",
        jti="j" * 22,
        issued_at=now,
        expires_at=now + timedelta(minutes=5),
        extra=extra,
    )
    claims = c.verify_access(token)
    assert claims.sub == subject
    assert {k: claims.claims[k] for k in extra} == extra


class TestVerifiedTokenCache:
    def test_a_cached_token_still_expires(self, clock: Clock) -> None:
        c = codec(clock=clock, leeway=timedelta(0))
        now = clock()
        token = c.issue_access(
            subject="u",
            session_id="s",
            jti="j" * 22,
            issued_at=now,
            expires_at=now + timedelta(seconds=1),
        )
        assert c.verify_access(token) is c.verify_access(token)  # the second is a cache hit
        clock.advance(timedelta(seconds=1))
        with pytest.raises(TokenExpired):
            c.verify_access(token)
        with pytest.raises(TokenExpired):
            c.verify_access(token)

    def test_a_token_just_issued_is_cached_and_still_expires(self, clock: Clock) -> None:
        """Issued tokens enter the cache at once (the first request after a login is a hit)
        under the same rules: expiry holds, and another codec verifies them in full."""
        c = codec(clock=clock, leeway=timedelta(0))
        now = clock()
        token = c.issue_access(
            subject="u", session_id="s", jti="j" * 22, issued_at=now, expires_at=now + timedelta(1)
        )
        assert c.verify_access(token) is c.verify_access(token)
        assert codec(clock=clock).verify_access(token).sub == "u"
        clock.advance(timedelta(days=1))
        with pytest.raises(TokenExpired):
            c.verify_access(token)

    def test_only_exact_tokens_hit(self) -> None:
        c = TokenCodec(TokenConfig(keys=KeyRing([ED])), cache_size=2)
        tokens = [access(c) for _ in range(3)]
        for token in tokens:
            c.verify_access(token)
        head, body, sig = tokens[0].split(".")
        other = "B" if sig[0] == "A" else "A"  # the first signature byte changes
        with pytest.raises(InvalidToken):
            c.verify_access(f"{head}.{body}.{other}{sig[1:]}")
        with pytest.raises(InvalidToken):
            c.verify_refresh(tokens[1])  # cached as an access token, still not a refresh token

    def test_cached_claims_cannot_be_changed_by_a_caller(self) -> None:
        c = codec()
        claims = c.verify_access(access(c)).claims
        with pytest.raises(TypeError):
            claims["sub"] = "admin"  # type: ignore[index]


# -- our compact-JWS parsing never accepts what PyJWT's full decode refuses ------------------

_HS = SigningKey.from_secret(b"k" * 32)
_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.text(max_size=4), max_size=2),
)


_DELETE = object()
_CLAIMS = ("iss", "aud", "sub", "sid", "jti", "iat", "exp", "nbf")
_MUTATIONS = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(_CLAIMS), st.one_of(st.just(_DELETE), _ANY_VALUE)),
    st.tuples(
        st.just("header"),
        st.sampled_from(["typ", "kid", "crit", "b64", "jku"]),
        st.one_of(st.just(_DELETE), _ANY_VALUE),
    ),
    st.tuples(st.just("alg"), st.sampled_from(["HS256", "EdDSA", "ES256", "none"]), st.none()),
    st.tuples(
        st.just("tamper"), st.sampled_from(["signature", "payload", "pad", "dot"]), st.none()
    ),
    st.tuples(st.just("none"), st.none(), st.none()),
)


@settings(max_examples=500, deadline=None)
@given(key=st.sampled_from([_HS, ED, ES]), mutation=_MUTATIONS)
def test_never_accepts_a_token_pyjwt_refuses(
    key: SigningKey, mutation: tuple[str, Any, Any]
) -> None:
    """One change to a valid token at a time; our verdict must match PyJWT's full decode
    (with the header checks PyJWT leaves to the caller), or be the stricter one."""
    kind, name, value = mutation
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "accounts-server",
        "aud": "accounts-server/api",
        "sub": "u1",
        "sid": "s1",
        "jti": "j" * 22,
        "iat": now - 5,
        "exp": now + 600,
    }
    header: dict[str, Any] = {"typ": "at+jwt", "kid": key.kid}
    for target in (payload, header):
        if kind == ("claim" if target is payload else "header"):
            if value is _DELETE:
                target.pop(name, None)
            else:
                target[name] = value
    algorithm = name if kind == "alg" else key.algorithm
    signer = {"HS256": _HS.signer, "EdDSA": ED.signer, "ES256": ES.signer, "none": None}
    try:
        token = jwt.encode(payload, signer[algorithm], algorithm=algorithm, headers=header)
    except (TypeError, ValueError, jwt.PyJWTError):
        return  # PyJWT cannot even write it (e.g. a non-string kid)
    head, body, signature = token.split(".")
    if kind == "tamper":
        flip = {"A": "B"}.get(signature[-1], "A")
        token = {
            "signature": f"{head}.{body}.{signature[:-1]}{flip}",
            "payload": f"{head}.{body[:-1]}{ {'A': 'B'}.get(body[-1], 'A') }.{signature}",
            "pad": f"{token}=",
            "dot": f"{head}.{body}",
        }[name]

    try:
        codec(key).verify_access(token)
        accepted = True
    except InvalidToken:
        accepted = False
    try:
        theirs = jwt.api_jwt.decode_complete(
            token,
            key.verifier,
            algorithms=[key.algorithm],
            audience="accounts-server/api",
            issuer="accounts-server",
            leeway=30,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"], "strict_aud": True},
        )
        seen = theirs["header"]
        pyjwt_accepts = (seen.get("kid"), seen.get("typ")) == (key.kid, "at+jwt") and not (
            {"crit", "b64"} & set(seen)
        )
    except jwt.PyJWTError:
        pyjwt_accepts = False
    assert not (accepted and not pyjwt_accepts), (header, payload, mutation)
    # Where we are stricter on purpose: sid must be a string; times integers, never floats
    # or booleans; no base64 padding (RFC 7515 §2; PyJWT tolerates it for AWS ALB).
    stricter = (kind, name) == ("tamper", "pad") or (
        kind == "claim"
        and (name == "sid" or (name in ("iat", "exp", "nbf") and type(value) is not int))
    )
    if not stricter:
        assert accepted == pyjwt_accepts, (header, payload, mutation)
