"""The server the JS client end-to-end test talks to (test-only; started and stopped by PID).

    python tests/js/serve_for_client.py PORT DB_PATH SMTP_PORT

Differences from `accounts-server serve`, each for the test: `admin` may impersonate;
throwaway sealing keys (two-factor secrets die with the process); and a clock 55 s behind with
1-minute access tokens, so a fresh access token looks expired to the client after ~5 s of
waiting. Sessions are the defaults: the client's concurrent refreshes must pass the default
reuse grace, as they do against `serve`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import uvicorn

from accounts_password import PasswordService
from accounts_server import (
    AccountsServer,
    KeyRing,
    SealingKeys,
    SigningKey,
    SMTPMailer,
    TokenConfig,
    User,
)
from accounts_server.http import create_app
from accounts_server.stores import SQLiteStore


def main() -> None:
    port, db_path, smtp_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    def admin_only(actor: User, target: User) -> bool:
        return actor.username == "admin"

    server = AccountsServer(
        store=SQLiteStore(db_path),
        tokens=TokenConfig(
            keys=KeyRing([SigningKey.generate()]), access_lifetime=timedelta(minutes=1)
        ),
        services=[
            PasswordService(mailer=SMTPMailer(sender="accounts@example.com", port=smtp_port))
        ],
        impersonation_authorize=admin_only,
        sealing=SealingKeys.generate(),
        clock=lambda: datetime.now(UTC) - timedelta(seconds=55),
    )
    uvicorn.run(create_app(server), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
