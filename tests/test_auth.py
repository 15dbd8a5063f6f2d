"""fer.auth: reviewer accounts from the environment, password checks, and signed session tokens."""

import logging

import pytest

from fer import auth


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("FER_REVIEWERS", "FER_REVIEWERS_FILE", "FER_SESSION_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_nothing_configured_means_no_logins_and_setup_help():
    assert not auth.reviewers_configured()
    assert not auth.check_login("alice", "secret")
    assert "FER_REVIEWERS" in auth.SETUP_HELP and "FER_REVIEWERS_FILE" in auth.SETUP_HELP
    with pytest.raises(ValueError):
        auth.issue_token("alice")


def test_accounts_from_the_environment_variable(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret, bob:p:w ,,broken")
    assert auth.reviewers_configured() and auth.reviewer_names() == ["alice", "bob"]
    assert auth.check_login("alice", "secret") and auth.check_login("bob", "p:w")
    assert not auth.check_login("alice", "Secret") and not auth.check_login("alice", "")
    assert not auth.check_login("mallory", "secret") and not auth.check_login("alice", None)


def test_accounts_from_a_file_with_hashed_and_plain_passwords(monkeypatch, tmp_path, caplog):
    accounts = tmp_path / "reviewers"
    accounts.write_text(f"# reviewers\n\nana:{auth.hash_password('hashed pw')}\nben:plain\nno password line\n"
                        f"carol:{'x' * 10}\n")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(accounts))
    monkeypatch.setenv("FER_REVIEWERS", "dave:env")
    with caplog.at_level(logging.WARNING, logger="fer.auth"):
        assert auth.reviewer_names() == ["ana", "ben", "carol", "dave"]
    assert "line 5" in caplog.text and "no password" not in caplog.text  # where, never what
    assert auth.check_login("ana", "hashed pw") and not auth.check_login("ana", auth.hash_password("hashed pw"))
    assert auth.check_login("ben", "plain") and auth.check_login("carol", "x" * 10) and auth.check_login("dave", "env")


def test_an_unreadable_accounts_file_counts_as_none(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING, logger="fer.auth"):
        assert not auth.reviewers_configured()
    assert "Cannot read FER_REVIEWERS_FILE" in caplog.text


def test_tokens_round_trip_and_reject_tampering(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret,bob:pw")
    token = auth.issue_token("alice")
    assert auth.verify_token(token) == "alice"
    assert auth.issue_token("alice") != token  # each sign-in gets its own token

    name, expiry, nonce, signature = token.split(".")
    bob_name = auth.issue_token("bob").split(".")[0]
    assert auth.verify_token(".".join([bob_name, expiry, nonce, signature])) is None  # another name, same signature
    assert auth.verify_token(".".join([name, str(int(expiry) + 3600), nonce, signature])) is None  # longer life
    assert auth.verify_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    for garbage in ("", "a.b.c", "a.b.c.d", "é.b.c.d", None, 42, "x" * 5000):
        assert auth.verify_token(garbage) is None


def test_tokens_expire(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret")
    token = auth.issue_token("alice", lifetime_s=60)
    now = auth._now()
    monkeypatch.setattr(auth, "_now", lambda: now + 61)
    assert auth.verify_token(token) is None


def test_tokens_depend_on_the_secret_and_the_account(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret,bob:pw")
    monkeypatch.setenv("FER_SESSION_SECRET", "one secret long enough")
    token = auth.issue_token("alice")
    assert auth.verify_token(token) == "alice"
    monkeypatch.setenv("FER_SESSION_SECRET", "another secret")
    assert auth.verify_token(token) is None  # signed under another secret
    monkeypatch.setenv("FER_SESSION_SECRET", "one secret long enough")
    monkeypatch.setenv("FER_REVIEWERS", "bob:pw")
    assert auth.verify_token(token) is None  # alice was removed


def test_revoked_tokens_stop_working(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret")
    token, other = auth.issue_token("alice"), auth.issue_token("alice")
    auth.revoke_token(token)
    assert auth.verify_token(token) is None and auth.verify_token(other) == "alice"
