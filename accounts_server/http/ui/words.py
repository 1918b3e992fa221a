"""What the pages call things: a session's device from its User-Agent, an audit event in
words. Display only: nothing here decides anything, and the raw values stay a hover away."""

from __future__ import annotations

import re

__all__ = ["EVENTS", "device", "event_words"]

#: Browser tokens, most specific first (Edge and Opera also say Chrome; Chrome says Safari).
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Version/", "Safari"),
)
_SYSTEMS = (
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)
_PROGRAM = re.compile(r"([A-Za-z][\w.-]{0,40})(?:/(\d{1,6}))?")

EVENTS = {
    "login_success": "Signed in",
    "login_error": "Sign-in refused",
    "logout_success": "Signed out",
    "refresh_token_reused": "An old session token was reused: the session was ended",
    "reset_password_success": "Password reset",
    "change_password_success": "Password changed",
    "email_verified": "Address verified",
    "email_added": "Address added",
    "email_removed": "Address removed",
    "two_factor_enabled": "Two-factor turned on",
    "two_factor_disabled": "Two-factor turned off",
    "recovery_code_used": "Recovery code used",
    "passkey_registered": "Passkey added",
    "passkey_removed": "Passkey removed",
    "passkey_sign_count_regressed": "A passkey's counter went back (a cloned key?)",
    "impersonation_success": "An admin acted as this user",
    "impersonation_error": "Impersonation refused",
    "session_revoked": "A session was ended",
    "create_user_success": "Account created",
    "user_deactivated": "Account deactivated",
    "user_activated": "Account activated",
    "user_deleted": "Account deleted",
    "admin_action": "Admin action",
}


def device(user_agent: str | None) -> str:
    """A browser as "Chrome 150 on Linux", a program as "curl 8", nothing as "unknown"."""
    if not user_agent:
        return "unknown"
    for token, name in _BROWSERS:
        if (at := user_agent.find(token)) >= 0:
            version = re.match(r"\d{1,6}", user_agent[at + len(token) :])
            browser = f"{name} {version.group(0)}" if version else name
            system = next((s for t, s in _SYSTEMS if t in user_agent), None)
            return f"{browser} on {system}" if system else browser
    found = _PROGRAM.match(user_agent)
    if found is None:
        return user_agent[:60]
    return " ".join(part for part in found.groups() if part)


def event_words(event: str) -> str:
    return EVENTS.get(event, event.replace("_", " "))
