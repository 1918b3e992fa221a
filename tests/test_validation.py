"""Identifier checks: examples at the edges, and properties over any text (a validator either
returns a value it accepts again unchanged, or raises its own error; nothing else)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts_server import ConfigurationError, InvalidEmail, InvalidUsername
from accounts_server.validation import (
    MAX_EMAIL_LENGTH,
    MAX_USERNAME_LENGTH,
    check_service_name,
    validate_email,
    validate_username,
)

NOT_TEXT = [None, 42, 1.5, b"ann@example.com", ["ann@example.com"], {"$ne": None}, object()]
#: Characters no identifier may hold: control (Cc), format (Cf: zero-width, bidi overrides),
#: surrogate (Cs), private use (Co) and unassigned (Cn).
HIDDEN = ["\x00", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\u202e", "\ufeff", "\ud800",
          "\ue000", "\u0378"]  # fmt: skip


class TestEmail:
    @pytest.mark.parametrize(
        ("given_", "expected"),
        [
            ("ann@example.com", "ann@example.com"),
            ("  ann@example.com\t\n", "ann@example.com"),
            ("Ann.O'Neil+news@mail.example.co.uk", "Ann.O'Neil+news@mail.example.co.uk"),
            ("用户@例子.广告", "用户@例子.广告"),
            ("a@b.c", "a@b.c"),
            ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
        ],
    )
    def test_accepted_and_trimmed(self, given_: str, expected: str) -> None:
        assert validate_email(given_) == expected

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "ann@bob@example.com",
            "ann smith@example.com",
            "ann@exa mple.com",
            "ann@example..com",
            "ann@.example.com",
            "ann@example.com.",
            "ann@example.com\nbcc@evil.example",
            "x" * 65 + "@example.com",
        ],
    )
    def test_refused_shapes(self, value: str) -> None:
        with pytest.raises(InvalidEmail):
            validate_email(value)

    @pytest.mark.parametrize("char", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
    def test_refused_hidden_characters(self, char: str) -> None:
        with pytest.raises(InvalidEmail):
            validate_email(f"ann{char}@example.com")
        with pytest.raises(InvalidEmail):
            validate_email(f"ann@exam{char}ple.com")

    def test_length_limit_is_254_after_trimming(self) -> None:
        def address(length: int) -> str:
            return "a" * 64 + "@" + "b" * (length - 64 - 1 - 4) + ".com"

        assert len(address(MAX_EMAIL_LENGTH)) == MAX_EMAIL_LENGTH == 254
        assert validate_email(address(254)) == address(254)
        assert validate_email(f"  {address(254)}  ") == address(254)
        with pytest.raises(InvalidEmail):
            validate_email(address(255))

    @pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
    def test_refused_non_text(self, value: object) -> None:
        with pytest.raises(InvalidEmail):
            validate_email(value)


class TestUsername:
    @pytest.mark.parametrize(
        ("given_", "expected"),
        [
            ("ann", "ann"),
            ("  ann \t", "ann"),
            ("a", "a"),
            ("Ann.O'Neil-3_x", "Ann.O'Neil-3_x"),
            ("ann smith", "ann smith"),
            ("名前", "名前"),
            ("é" * 64, "é" * 64),
            ("x" * 64, "x" * 64),
            (" " + "x" * 64 + " ", "x" * 64),
        ],
    )
    def test_accepted_and_trimmed(self, given_: str, expected: str) -> None:
        assert validate_username(given_) == expected

    @pytest.mark.parametrize(
        "value",
        ["", "   ", "\n", "x" * 65, "ann@example.com", "@ann", "ann@", "@", "ann\nbob", "a\tb"],
    )
    def test_refused(self, value: str) -> None:
        with pytest.raises(InvalidUsername):
            validate_username(value)

    def test_length_limit_is_64(self) -> None:
        assert MAX_USERNAME_LENGTH == 64
        assert validate_username("x" * 64) == "x" * 64
        with pytest.raises(InvalidUsername):
            validate_username("x" * 65)

    @pytest.mark.parametrize("char", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
    def test_refused_hidden_characters(self, char: str) -> None:
        with pytest.raises(InvalidUsername):
            validate_username(f"an{char}n")
        with pytest.raises(InvalidUsername):
            validate_username(char)

    @pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
    def test_refused_non_text(self, value: object) -> None:
        with pytest.raises(InvalidUsername):
            validate_username(value)


class TestServiceName:
    @pytest.mark.parametrize(
        "name", ["password", "oauth", "magic-link", "magic_link", "a", "LDAP2", "A" + "b" * 31]
    )
    def test_accepted_unchanged(self, name: str) -> None:
        assert check_service_name(name) == name

    @pytest.mark.parametrize(
        "name",
        [
            "",
            "1password",
            "-x",
            "_x",
            "a" * 33,
            "pass word",
            " password",
            "pass/word",
            "pass.word",
            "..",
            "päss",
            "pass%2F",
            "pass\x00",
            "password\n",
        ],
    )
    def test_refused(self, name: str) -> None:
        with pytest.raises(ConfigurationError, match="invalid login service name"):
            check_service_name(name)

    @pytest.mark.parametrize("name", NOT_TEXT, ids=repr)
    def test_refused_non_text(self, name: object) -> None:
        with pytest.raises(ConfigurationError):
            check_service_name(name)


# -- properties ---------------------------------------------------------------------------

Validator = Callable[[object], str]

#: Any text, with the hidden characters (a lone surrogate among them) mixed in more often.
_text = st.one_of(
    st.text(), st.lists(st.one_of(st.characters(), st.sampled_from(HIDDEN))).map("".join)
)
#: Text near the accepted region, so the "accepted" branch is explored too, not only refusals.
_local = st.text(st.sampled_from("abcXYZ09.+-_'é用"), min_size=1, max_size=66)
_label = st.text(st.sampled_from("abcXYZ09-é用"), min_size=1, max_size=12)
#: At most one odd character, put anywhere: a hidden one, a separator, or anything at all.
_spice = st.none() | st.tuples(
    st.integers(0, 100), st.one_of(st.sampled_from([*HIDDEN, "@", ".", " "]), st.characters())
)


def _email(
    pad: str, local: str, labels: list[str], tail: str, spice: tuple[int, str] | None
) -> str:
    text = f"{pad}{local}@{'.'.join(labels)}{tail}"
    if spice is not None:
        at, char = spice
        text = text[:at] + char + text[at:]
    return text


_emails = st.builds(
    _email,
    st.sampled_from(["", " ", "\t", "\n"]),
    _local,
    st.lists(_label, min_size=1, max_size=4),
    st.sampled_from(["", " ", "\n", "\u00a0", "\u2028"]),
    _spice,
)
_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,40}\n?", fullmatch=True)


def accepted_again_unchanged(validator: Validator, error: type[Exception], value: object) -> None:
    try:
        result = validator(value)
    except error:
        return
    assert isinstance(result, str)
    assert validator(result) == result


@settings(max_examples=500)
@given(st.one_of(_text, _emails))
def test_validate_email_is_idempotent_or_invalid_email(value: str) -> None:
    accepted_again_unchanged(validate_email, InvalidEmail, value)


@settings(max_examples=300)
@given(st.one_of(_text, _emails))
def test_an_accepted_email_has_the_documented_shape(value: str) -> None:
    try:
        address = validate_email(value)
    except InvalidEmail:
        return
    assert address == address.strip()
    assert len(address) <= MAX_EMAIL_LENGTH
    local, _, domain = address.partition("@")
    assert 1 <= len(local) <= 64
    assert "@" not in domain
    assert "." in domain and "" not in domain.split(".")


@settings(max_examples=500)
@given(_text)
def test_validate_username_is_idempotent_or_invalid_username(value: str) -> None:
    accepted_again_unchanged(validate_username, InvalidUsername, value)


@settings(max_examples=300)
@given(_text)
def test_an_accepted_username_has_the_documented_shape(value: str) -> None:
    try:
        username = validate_username(value)
    except InvalidUsername:
        return
    assert username == username.strip() != ""
    assert len(username) <= MAX_USERNAME_LENGTH
    assert "@" not in username


@settings(max_examples=500)
@given(st.one_of(_text, _names))
def test_check_service_name_is_idempotent_or_configuration_error(value: str) -> None:
    accepted_again_unchanged(check_service_name, ConfigurationError, value)


@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text())))
def test_non_text_is_always_the_validators_own_error(value: object) -> None:
    with pytest.raises(InvalidEmail):
        validate_email(value)
    with pytest.raises(InvalidUsername):
        validate_username(value)
    with pytest.raises(ConfigurationError):
        check_service_name(value)


@settings(max_examples=300)
@given(st.one_of(_text, _names))
def test_an_accepted_service_name_is_one_plain_path_segment(value: str) -> None:
    try:
        name = check_service_name(value)
    except ConfigurationError:
        return
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name), repr(name)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_line_and_paragraph_separators_are_refused(separator: str) -> None:
    """They are not control characters by category, but they split log lines."""
    with pytest.raises(InvalidUsername):
        validate_username(f"ann{separator}admin")
    with pytest.raises(InvalidEmail):
        validate_email(f"ann{separator}x@example.com")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json, max_size=4))
def test_extra_accepted_is_extra_every_store_keeps(extra: dict[str, object]) -> None:
    """Whatever `validate_extra` lets through encodes as BSON (MongoDB) and comes back from
    JSON (SQLite) unchanged; whatever it refuses, it refuses with a 4xx error, not a crash."""
    import bson
    import orjson

    from accounts_server import InvalidRequest, ValidationFailed
    from accounts_server.validation import validate_extra

    try:
        kept = validate_extra(extra)
    except (InvalidRequest, ValidationFailed):
        return
    assert bson.decode(bson.encode(kept)) == kept
    assert orjson.loads(orjson.dumps(kept)) == kept
