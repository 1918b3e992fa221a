"""Regenerate accounts_password/data/common-passwords.txt.gz.

Source: the `passwords` frequency list shipped by the PyPI package zxcvbn 4.5.0
(zxcvbn-python, MIT licence; the list comes from Dropbox's zxcvbn, built from leaked-password
corpora), most common first. Only entries of 8+ characters are kept: shorter ones are refused by
the length rule already. Entries are NFKC-normalised and lower-cased, as they are compared.

    pip install zxcvbn==4.5.0 && python services/password/scripts/make_blocklist.py
"""

from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

from zxcvbn.frequency_lists import FREQUENCY_LISTS  # type: ignore[import-not-found]

OUT = Path(__file__).parent.parent / "accounts_password" / "data" / "common-passwords.txt.gz"


def main() -> None:
    seen: dict[str, None] = {}
    for word in FREQUENCY_LISTS["passwords"]:
        normal = unicodedata.normalize("NFKC", word).lower()
        if len(normal) >= 8:
            seen.setdefault(normal, None)
    header = "# zxcvbn 4.5.0 passwords list (MIT), 8+ characters, most common first\n"
    OUT.write_bytes(gzip.compress((header + "\n".join(seen) + "\n").encode(), mtime=0))
    print(f"{len(seen)} passwords -> {OUT}")


if __name__ == "__main__":
    main()
