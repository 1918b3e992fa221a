"""The OAuth service as `serve` builds it from its settings (`[services.oauth]` tables)."""

from __future__ import annotations

from typing import Any

import pytest

from accounts_oauth import OAuthService, from_settings
from accounts_server import ConfigurationError, ServiceSettings

GOOGLE = {
    "issuer": "https://accounts.google.com",
    "client_id": "client-1",
    "client_secret": "s3cret",
    "redirect_uri": "https://api.example.com/accounts/oauth/google/callback",
}


def built(**values: Any) -> OAuthService | None:
    return from_settings(ServiceSettings(name="oauth", values=values))


def test_one_provider_per_table() -> None:
    service = built(providers={"google": GOOGLE}, frontend_url="https://app.example.com/done")
    assert service is not None
    google = service.providers["google"]
    assert (google.issuer, google.client_id, google.client_secret) == (
        "https://accounts.google.com",
        "client-1",
        "s3cret",
    )
    assert google.scopes == ("openid", "email", "profile")  # the provider's default
    assert service.frontend_url == "https://app.example.com/done"


def test_no_provider_means_nothing_to_serve() -> None:
    assert built() is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"providers": {"google": {**GOOGLE, "issuer": ""}}},
            "providers.google.issuer is required",
        ),
        (
            {"providers": {"google": {k: v for k, v in GOOGLE.items() if k != "redirect_uri"}}},
            "redirect_uri is required",
        ),
        ({"providers": {"google": {**GOOGLE, "clientid": "x"}}}, "unknown setting.*clientid"),
        ({"providers": {"google": {**GOOGLE, "scopes": ["email"]}}}, "openid scope"),
        ({"providers": "google"}, "must be tables"),
        ({"provider": {}}, "unknown setting.*provider"),
    ],
)
def test_a_bad_setting_is_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        built(**values)
