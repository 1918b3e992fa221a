"""The public surface is pinned, the core stays free of HTTP, and services use only it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import accounts_server
import accounts_server.http
import accounts_server.stores

ROOT = Path(__file__).parent.parent


def test_accounts_server_exports() -> None:
    assert accounts_server.__all__ == sorted(accounts_server.__all__)
    assert set(accounts_server.__all__) == {
        "AccessClaims",
        "AccountsError",
        "AccountsServer",
        "Admin",
        "AdminAction",
        "AdminNotAllowed",
        "AuditConfig",
        "AuditQuery",
        "AuditRecord",
        "Authenticated",
        "AuthenticationFailed",
        "ConfigurationError",
        "Conflict",
        "ConnectionInfo",
        "Credential",
        "CredentialAlreadyExists",
        "Dashboard",
        "Email",
        "EmailAlreadyExists",
        "EndpointHandler",
        "EndpointRequest",
        "EventName",
        "Forbidden",
        "HookEvent",
        "IdentityAlreadyLinked",
        "ImpersonationResult",
        "InvalidCredentials",
        "InvalidEmail",
        "InvalidPassword",
        "InvalidRequest",
        "InvalidToken",
        "InvalidUsername",
        "KeyRing",
        "LastLoginMethod",
        "Limit",
        "Listener",
        "LogMailer",
        "LoginAvailability",
        "LoginNotAllowed",
        "LoginResult",
        "LoginService",
        "OffersSignInLinks",
        "MailMessage",
        "MailTemplate",
        "MailUnavailable",
        "Mailer",
        "MethodNotAllowed",
        "NotFound",
        "NotWhileImpersonating",
        "OneTimeToken",
        "OneTimeTokens",
        "Overloaded",
        "RateLimited",
        "RateLimiter",
        "RateLimits",
        "Redirect",
        "RequestTimeout",
        "RequestTooLarge",
        "ResetPasswordLinkExpired",
        "RouteNotFound",
        "SMTPMailer",
        "SealedDataUnreadable",
        "SealingKeys",
        "SecondFactor",
        "SecretService",
        "ServiceContext",
        "ServiceEndpoint",
        "ServiceSettings",
        "ServiceNotFound",
        "Session",
        "SessionConfig",
        "SignInLink",
        "SessionNotFound",
        "SigningKey",
        "StepUpRequired",
        "Store",
        "StoreUnavailable",
        "StoredSession",
        "TemporarilyUnavailable",
        "TokenConfig",
        "TokenExpired",
        "TokenReused",
        "Tokens",
        "TotpSecret",
        "TwoFactor",
        "TwoFactorAlreadySet",
        "TwoFactorCodeMismatch",
        "TwoFactorCodeRequired",
        "TwoFactorConfig",
        "TwoFactorNotSet",
        "TwoFactorSecretRefused",
        "TwoFactorStatus",
        "TwoFactorUnavailable",
        "UnsupportedMediaType",
        "User",
        "UserDetail",
        "UserAlreadyExists",
        "UserDeactivated",
        "UserNotFound",
        "UsernameAlreadyExists",
        "UsernameOrEmailRequired",
        "ValidationFailed",
        "VerificationKey",
        "VerifyEmailLinkExpired",
        "canonical_email",
        "canonical_username",
        "validate_email",
        "validate_username",
    }
    for name in accounts_server.__all__:
        assert hasattr(accounts_server, name)


def test_http_and_stores_exports() -> None:
    assert accounts_server.http.__all__ == [
        "STATUS",
        "AccountsBackend",
        "AccountsUser",
        "CurrentUser",
        "StatelessBackend",
        "TokenUser",
        "TokenVerifier",
        "bearer_token",
        "check_step_up",
        "create_app",
        "on_auth_error",
        "status_for",
        "to_wire",
    ]
    assert accounts_server.stores.__all__ == [
        "AuditQuery",
        "AuditRecord",
        "Credential",
        "SQLiteStore",
        "Store",
        "StoredSession",
        "canonical_email",
        "canonical_username",
    ]


def test_every_error_has_a_status_and_a_unique_code() -> None:
    from accounts_server.http import status_for

    errors = [
        getattr(accounts_server, n)
        for n in accounts_server.__all__
        if isinstance(getattr(accounts_server, n), type)
        and issubclass(getattr(accounts_server, n), accounts_server.AccountsError)
    ]
    codes = [e.code for e in errors]
    assert len(codes) == len(set(codes))
    for error in errors:
        status = status_for(error())
        assert (
            status == 500
            if error in (accounts_server.AccountsError, accounts_server.ConfigurationError)
            else 400 <= status < 600
        )


def test_importing_the_core_loads_no_framework_driver_or_cli() -> None:
    code = (
        "import sys, accounts_server; "
        "print(sorted(m for m in ('starlette', 'pymongo', 'motor', 'click', 'uvicorn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serving_loads_no_library_it_does_not_use() -> None:
    """Idle memory is a target (issue 17): httpx (and the rich it brings) is for the remote
    JWKS verifier, rich for the CLI's tables, websockets for no route of ours."""
    code = (
        "import sys, accounts_server.cli, accounts_server.http; "
        "print(sorted(m for m in ('httpx', 'rich', 'websockets', 'pygments') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_services_import_only_the_public_api() -> None:
    public = set(accounts_server.__all__)
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("accounts_server")
            ):
                assert node.module == "accounts_server", f"{path}: imports {node.module}"
                names = {alias.name for alias in node.names}
                assert names <= public, f"{path}: {names - public} are not public"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("accounts_server."), f"{path}: {alias.name}"


def test_nothing_a_service_imports_refers_back_to_the_server() -> None:
    """The service contract is the context: no module a service imports names the server."""
    for module in (
        "services",
        "context",
        "onetime",
        "hooks",
        "types",
        "mail",
        "ratelimit",
        "twofactor",
        "sealing",
    ):
        tree = ast.parse((ROOT / "accounts_server" / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "server" not in imported and "accounts_server.server" not in imported, module
    for folder in ("services", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert ".server." not in text and "request.server" not in text, path
