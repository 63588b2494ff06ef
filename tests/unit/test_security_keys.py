"""The API keys file: its format, each refusal in exact words, lookups by digest, reloads,
and the `new-key` command."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from server.security import __main__ as cli
from server.security.keys import (
    KEY_PREFIX,
    MAX_KEY_LENGTH,
    KeysFileError,
    KeyTable,
    digest,
    new_key,
    parse_keys,
)
from server.security.principal import API_KEY, Rate
from server.security.reloader import Reloader

SHA = "a" * 64


def test_digest_is_the_hex_sha256_of_the_key() -> None:
    assert digest("v2k_x") == hashlib.sha256(b"v2k_x").hexdigest()


def test_new_keys_are_long_random_and_prefixed() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith(KEY_PREFIX) and len(k) >= 40 and "." not in k for k in keys)


def test_an_entry_becomes_a_principal() -> None:
    table = parse_keys(
        f"""
keys:
  - name: analytics
    sha256: {SHA}
    models: [digits, "text_*"]
    admin: true
    rate: 20
    burst: 40
  - name: plain
    sha256: {"b" * 64}
    models: ["*"]
"""
    )
    analytics, plain = table[SHA], table["b" * 64]
    assert (analytics.kind, analytics.name, analytics.admin) == (API_KEY, "analytics", True)
    assert analytics.rate == Rate(20.0, 40)
    assert analytics.models.allows("digits") and analytics.models.allows("text_direction")
    assert not analytics.models.allows("minilm")
    assert (plain.admin, plain.rate) == (False, None)  # None: the server's default rate
    assert plain.models.allows("anything")


def test_rate_zero_is_unlimited_and_burst_defaults_to_the_servers() -> None:
    table = parse_keys(
        f"keys:\n- {{name: a, sha256: {SHA}, models: [m], rate: 0}}\n"
        f"- {{name: b, sha256: {'b' * 64}, models: [m], rate: 3}}\n",
        default_burst=7,
    )
    assert table[SHA].rate == Rate(0.0, 0)
    assert table["b" * 64].rate == Rate(3.0, 7)


def test_an_empty_file_has_no_keys() -> None:
    assert parse_keys("") == {}
    assert parse_keys("keys: []") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys: [", "not valid YAML at line 1"),
        ("other: 1", "expected one top-level field, 'keys', holding a list"),
        ("keys: {a: 1}", "'keys' must be a list"),
        ("keys: [1]", "keys[0]: expected a mapping with name, sha256 and models"),
        (f"keys: [{{sha256: {SHA}, models: []}}]", "keys[0]: 'name' must be a non-empty string"),
        (f"keys: [{{name: a, sha256: {SHA}, models: [], extra: 1}}]", "unknown field(s) ['extra']"),
        ("keys: [{name: a, sha256: ABC, models: []}]", "key 'a': 'sha256' must be 64 lowercase"),
        (f"keys: [{{name: a, sha256: {SHA.upper()}, models: []}}]", "must be 64 lowercase hex"),
        (f"keys: [{{name: a, sha256: {SHA}}}]", "key 'a': 'models' must be a list of names"),
        (f"keys: [{{name: a, sha256: {SHA}, models: digits}}]", "'models' must be a list"),
        (f"keys: [{{name: a, sha256: {SHA}, models: [], admin: yes-ish}}]", "'admin' must be"),
        (f"keys: [{{name: a, sha256: {SHA}, models: [], rate: fast}}]", "'rate' must be a number"),
        (f"keys: [{{name: a, sha256: {SHA}, models: [], rate: -1}}]", "'rate' must be a number"),
        (f"keys: [{{name: a, sha256: {SHA}, models: [], burst: 3}}]", "'rate' must be a number"),
        (
            f"keys: [{{name: a, sha256: {SHA}, models: [], rate: 1, burst: 1.5}}]",
            "'burst' must be a whole number",
        ),
        (
            f"keys: [{{name: a, sha256: {SHA}, models: []}}, "
            f"{{name: a, sha256: {'b' * 64}, models: []}}]",
            "key 'a' appears more than once",
        ),
        (
            f"keys: [{{name: a, sha256: {SHA}, models: []}}, "
            f"{{name: b, sha256: {SHA}, models: []}}]",
            "key 'b' has the same digest as another key",
        ),
    ],
)
def test_malformed_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(KeysFileError) as info:
        parse_keys(text)
    assert message in str(info.value)


def _write(path: Path, *entries: tuple[str, str, list[str]]) -> None:
    keys = [{"name": n, "sha256": digest(k), "models": m} for n, k, m in entries]
    path.write_text(json.dumps({"keys": keys}))


def test_the_table_finds_keys_by_digest_and_refuses_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = new_key()
    _write(path, ("ops", key, ["*"]))
    table = KeyTable(path)
    assert table.lookup(key) is not None and table.lookup(key).name == "ops"  # type: ignore[union-attr]
    assert table.lookup(key + "x") is None
    assert table.lookup(digest(key)) is None  # the digest is not a key
    assert table.lookup("a" * (MAX_KEY_LENGTH + 1)) is None


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="cannot read the keys file"):
        KeyTable(tmp_path / "absent.yaml")


def test_the_reloader_picks_up_changes_and_keeps_the_old_table_on_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    old, new = new_key(), new_key()
    _write(path, ("old", old, ["*"]))
    table = KeyTable(path)
    reloader = Reloader([table], interval_s=0)
    reloader.check()
    assert table.lookup(old) is not None  # unchanged: nothing re-read

    _write(path, ("old", old, ["*"]), ("new", new, ["digits"]))
    reloader.check()
    assert table.lookup(new) is not None

    path.write_text("keys: [")
    with caplog.at_level(logging.ERROR):
        reloader.check()
    assert table.lookup(new) is not None  # still the last good table
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "reload failed; what was loaded before stays in force"
    assert record.reason == "not valid YAML at line 1"  # type: ignore[attr-defined]

    _write(path, ("new", new, ["digits"]))
    reloader.check(force=True)
    assert table.lookup(old) is None and table.lookup(new) is not None


def test_new_key_prints_the_key_and_an_entry_that_parses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["new-key", "analytics", "--models", "digits", "text_*", "--rate", "5"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith(KEY_PREFIX)
    assert key not in err  # the entry holds the digest only
    table = parse_keys("keys:\n" + err)  # the comments are YAML comments
    principal = table[digest(key)]
    assert principal.name == "analytics" and principal.rate == Rate(5.0, 5)
    assert principal.models.allows("text_direction") and not principal.admin


def test_digest_command_hashes_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("v2k_abc\n"))
    assert cli.main(["digest"]) == 0
    assert capsys.readouterr().out.strip() == digest("v2k_abc")
