"""A software WebAuthn authenticator and client, so the tests can run passkey ceremonies
without a browser.

`SoftAuthenticator` plays the browser and the authenticator together: it takes the options a
server sends (`PublicKeyCredentialCreationOptionsJSON` / `PublicKeyCredentialRequestOptionsJSON`,
bytes as base64url without padding, as py_webauthn's `options_to_json` writes them) and returns
what `credential.toJSON()` returns in a browser (`RegistrationResponseJSON` /
`AuthenticationResponseJSON`). Keys are real (P-256 ECDSA or Ed25519, from `cryptography`) and the
CBOR is real (`cbor2`), so a server verifies these responses exactly as it verifies a browser's.
Keyword overrides (origin, RP ID, challenge, client data type, flags, counter, user handle) let a
test forge the one thing a check is about while everything else stays valid.

What it does not do: no CTAP and no transport (USB, NFC, BLE, hybrid), no PIN or biometrics (user
presence and verification are flags), no extensions (`clientExtensionResults` is always empty and
the ED flag is never set), no attestation but "none" and packed self-attestation, no algorithms
but ES256 and EdDSA, no timeouts, hints or user prompts. What only a browser can show (its own
checks, its JSON serialisation, a platform authenticator) belongs to the real browser test
(tests/browser/passkeys-e2e.mjs: Chromium with a virtual authenticator).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, Literal
from urllib.parse import urlsplit

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

Alg = Literal["ES256", "EdDSA"]
#: COSE algorithm identifiers (RFC 9053) of the two algorithms.
COSE_ALG: dict[Alg, int] = {"ES256": -7, "EdDSA": -8}
#: When `pubKeyCredParams` is empty a client uses ES256 and RS256 (WebAuthn §5.1.3 step 10).
_DEFAULT_ALGS = (-7, -257)

# Authenticator data flags (WebAuthn §6.1).
UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _domain_within(host: str, rp_id: str) -> bool:
    """Whether `rp_id` is `host` or a parent domain of it (no public-suffix check)."""
    return host == rp_id or host.endswith("." + rp_id)


@dataclass
class SoftCredential:
    """One credential the authenticator holds (a discoverable one: `get` finds it with an empty
    `allowCredentials`)."""

    id: bytes
    rp_id: str
    user_handle: bytes
    private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey
    alg: Alg
    sign_count: int = 0

    @property
    def id_b64(self) -> str:
        return b64url(self.id)

    @property
    def cose_public_key(self) -> bytes:
        """The public key as a CBOR-encoded COSE_Key, as in attested credential data."""
        if isinstance(self.private_key, Ed25519PrivateKey):
            x = self.private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return cbor2.dumps({1: 1, 3: -8, -1: 6, -2: x})
        numbers = self.private_key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})

    @property
    def spki_public_key(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (`response.publicKey` in the JSON)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        """ES256: DER-encoded ECDSA over SHA-256; EdDSA: the raw 64-byte Ed25519 signature."""
        if isinstance(self.private_key, Ed25519PrivateKey):
            return self.private_key.sign(data)
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


class SoftAuthenticator:
    """A browser and an authenticator in one; see the module docstring."""

    def __init__(
        self,
        *,
        origin: str,
        alg: Alg = "ES256",
        user_verification: bool = True,
        backup_eligible: bool = False,
        backed_up: bool = False,
        aaguid: bytes = bytes(16),
        counter: bool = True,
        transports: Sequence[str] = ("internal",),
    ) -> None:
        if len(aaguid) != 16:
            raise ValueError("an AAGUID is 16 bytes")
        self.origin = origin
        self.alg: Alg = alg
        self.user_verification = user_verification
        self.backup_eligible = backup_eligible
        self.backed_up = backed_up
        self.aaguid = aaguid
        self.counter = counter
        self.transports = list(transports)
        self.credentials: list[SoftCredential] = []

    # -- registration ------------------------------------------------------------------------

    def create(
        self,
        options: Mapping[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool | None = None,
        fmt: Literal["none", "packed"] = "none",
        challenge: str | None = None,
        client_type: str = "webauthn.create",
        alg: Alg | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """`navigator.credentials.create({publicKey: options})`, then `credential.toJSON()`.
        `credential_id` forces the new credential's id (another user's, to test uniqueness).

        Raises `ValueError` if the server offers none of the authenticator's algorithm, and
        `ValueError("excluded")` if `excludeCredentials` names a credential it holds for the RP
        (a browser's InvalidStateError). The new credential is kept in `self.credentials`.
        """
        origin, rp_id = self._client(origin, rp_id, options.get("rp", {}).get("id"))
        alg = alg or self.alg
        offered = [
            p["alg"] for p in options.get("pubKeyCredParams", []) if p.get("type") == "public-key"
        ] or list(_DEFAULT_ALGS)
        if COSE_ALG[alg] not in offered:
            raise ValueError(f"the server offers {offered}, not {alg} ({COSE_ALG[alg]})")
        excluded = {unb64url(d["id"]) for d in options.get("excludeCredentials", [])}
        if any(c.rp_id == rp_id and c.id in excluded for c in self.credentials):
            raise ValueError("excluded")

        private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey = (
            Ed25519PrivateKey.generate()
            if alg == "EdDSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        credential = SoftCredential(
            id=credential_id or secrets.token_bytes(16 + secrets.randbelow(17)),
            rp_id=rp_id,
            user_handle=unb64url(options["user"]["id"]),
            private_key=private_key,
            alg=alg,
        )
        self.credentials.append(credential)

        auth_data = (
            self._auth_data(rp_id, user_present, user_verified, AT, credential.sign_count)
            + self.aaguid
            + len(credential.id).to_bytes(2, "big")
            + credential.id
            + credential.cose_public_key
        )
        client_data = self._client_data(
            client_type, options["challenge"] if challenge is None else challenge, origin
        )
        att_stmt: dict[str, Any] = {}
        if fmt == "packed":
            signed = auth_data + hashlib.sha256(client_data).digest()
            att_stmt = {"alg": COSE_ALG[alg], "sig": credential.sign(signed)}
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": att_stmt, "authData": auth_data})
        return {
            "id": credential.id_b64,
            "rawId": credential.id_b64,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "transports": list(self.transports),
                "publicKey": b64url(credential.spki_public_key),
                "publicKeyAlgorithm": COSE_ALG[alg],
                "attestationObject": b64url(attestation_object),
            },
            "authenticatorAttachment": self._attachment(),
            "clientExtensionResults": {},
        }

    # -- authentication ----------------------------------------------------------------------

    def get(
        self,
        options: Mapping[str, Any],
        *,
        credential: SoftCredential | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        user_present: bool = True,
        user_verified: bool | None = None,
        sign_count: int | None = None,
        challenge: str | None = None,
        client_type: str = "webauthn.get",
        user_handle: bytes | EllipsisType | None = ...,
    ) -> dict[str, Any]:
        """`navigator.credentials.get({publicKey: options})`, then `credential.toJSON()`.

        The credential is `credential` if given (it need not be one of `self.credentials`), else
        the first held for the RP ID whose id is in a non-empty `allowCredentials`, else the first
        held for the RP ID; `ValueError` if there is none. With `counter` on, the credential's
        `sign_count` goes up by one and is reported; with it off, 0 is reported. `sign_count`
        reports that number instead and leaves the stored count alone (a forged, replayed or
        cloned-authenticator response; the next ordinary `get` goes on from the stored count).
        `user_handle`: the credential's by default; other bytes to forge one; None to leave
        `userHandle` out, as for a credential that is not discoverable.
        """
        origin, rp_id = self._client(origin, rp_id, options.get("rpId"))
        if credential is None:
            allowed = {unb64url(d["id"]) for d in options.get("allowCredentials", [])}
            credential = next(
                (
                    c
                    for c in self.credentials
                    if c.rp_id == rp_id and (not allowed or c.id in allowed)
                ),
                None,
            )
            if credential is None:
                raise ValueError(f"no credential for {rp_id!r} among those allowed")
        if sign_count is None:
            if self.counter:
                credential.sign_count += 1
            sign_count = credential.sign_count if self.counter else 0

        auth_data = self._auth_data(rp_id, user_present, user_verified, 0, sign_count)
        client_data = self._client_data(
            client_type, options["challenge"] if challenge is None else challenge, origin
        )
        signature = credential.sign(auth_data + hashlib.sha256(client_data).digest())
        if isinstance(user_handle, EllipsisType):
            user_handle = credential.user_handle
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if user_handle is not None:
            response["userHandle"] = b64url(user_handle)
        return {
            "id": credential.id_b64,
            "rawId": credential.id_b64,
            "type": "public-key",
            "response": response,
            "authenticatorAttachment": self._attachment(),
            "clientExtensionResults": {},
        }

    # -- shared ------------------------------------------------------------------------------

    def _client(
        self, origin: str | None, rp_id: str | None, requested: str | None
    ) -> tuple[str, str]:
        """The origin and RP ID a ceremony uses. Without overrides, like a browser: the RP ID
        the options name (else the origin's host), refused unless it is the origin's host or a
        parent domain of it (a browser's SecurityError)."""
        origin_ = self.origin if origin is None else origin
        host = urlsplit(origin_).hostname or ""
        overridden = origin is not None or rp_id is not None
        if not overridden and requested is not None and not _domain_within(host, requested):
            raise ValueError(f"RP ID {requested!r} is not valid for origin {origin_!r}")
        if rp_id is None:
            rp_id = host if requested is None else requested
        return origin_, rp_id

    def _auth_data(
        self,
        rp_id: str,
        user_present: bool,
        user_verified: bool | None,
        extra_flags: int,
        sign_count: int,
    ) -> bytes:
        """rpIdHash, flags and signCount: the 37 bytes every authenticatorData starts with."""
        if user_verified is None:
            user_verified = self.user_verification
        flags = extra_flags
        flags |= UP if user_present else 0
        flags |= UV if user_verified else 0
        flags |= BE if self.backup_eligible else 0
        flags |= BS if self.backed_up else 0
        return (
            hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + sign_count.to_bytes(4, "big")
        )

    @staticmethod
    def _client_data(client_type: str, challenge: str, origin: str) -> bytes:
        data = {"type": client_type, "challenge": challenge, "origin": origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def _attachment(self) -> str:
        return "platform" if "internal" in self.transports else "cross-platform"
