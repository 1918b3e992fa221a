"""`python -m accounts_server` is the `accounts-server` command."""

from .cli import main

main()
