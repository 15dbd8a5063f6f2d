"""fer.auth: reviewer accounts from the environment, password checks, and signed session tokens."""

import hashlib
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


def test_new_hashes_are_salted_scrypt_and_every_format_still_signs_in(monkeypatch, tmp_path, caplog):
    first, second = auth.hash_password("pw"), auth.hash_password("pw")
    assert first.startswith(f"scrypt${auth.SCRYPT_N}$") and first != second  # salted: same password, new hash
    accounts = tmp_path / "reviewers"
    accounts.write_text(f"ana:{first}\nben:{hashlib.sha256(b'old').hexdigest()}\ncy:plain\n"
                        f"dee:scrypt$1024$8$1$c2FsdA$tooshort\neve:scrypt${2**30}$8$1$c2FsdA${'A' * 43}\n")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(accounts))
    with caplog.at_level(logging.WARNING, logger="fer.auth"):
        assert auth.reviewer_names() == ["ana", "ben", "cy"]  # malformed or greedy scrypt lines are refused
    assert "line 4" in caplog.text and "line 5" in caplog.text
    assert auth.check_login("ana", "pw") and not auth.check_login("ana", "pW")
    assert auth.check_login("ben", "old") and auth.check_login("cy", "plain")
    assert not auth.check_login("ana", first)  # the hash is not a password


def test_names_that_clean_alike_refuse_the_whole_configuration(monkeypatch, tmp_path, caplog):
    accounts = tmp_path / "reviewers"
    accounts.write_text("=cmd|' /C calc'!A0:one\n'=cmd|' /C calc'!A0:two\nana:three\n")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(accounts))
    with caplog.at_level(logging.ERROR, logger="fer.auth"):
        assert not auth.reviewers_configured() and not auth.check_login("ana", "three")
    assert "line 1" in caplog.text and "line 2" in caplog.text
    with pytest.raises(auth.AuthError, match="same reviewer once names are cleaned"):
        auth.check_accounts()
    with pytest.raises(auth.AuthError, match="server log names them"):  # a visitor is not told the names
        auth.sign_in("ana", "three")
    accounts.write_text("ana:three\nana:four\n")  # the same name twice is one account: the later entry wins
    auth.check_accounts()
    assert auth.check_login("ana", "four") and not auth.check_login("ana", "three")


def test_an_account_name_is_its_cleaned_form(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "\u202eeve\u200d:pw,=sum:pw2")
    assert auth.reviewer_names() == ["'=sum", "eve"]
    assert auth.check_login("eve", "pw") and auth.check_login("=sum", "pw2")
    assert auth.verify_token(auth.sign_in("\u202eeve", "pw")) == "eve"


def test_sign_in_backs_off_without_checking_the_password(monkeypatch):
    monkeypatch.setenv("FER_REVIEWERS", "alice:secret")
    checked = []
    real = auth.check_login
    monkeypatch.setattr(auth, "check_login", lambda *args: checked.append(args) or real(*args))
    for _ in range(5):
        with pytest.raises(auth.AuthError, match="Wrong"):
            auth.sign_in("alice", "guess", client="10.0.0.1")
    with pytest.raises(auth.AuthError, match="Too many"):
        auth.sign_in("alice", "secret", client="10.0.0.2")  # another address: the account still waits
    assert len(checked) == 5  # the sixth try was refused before its password was looked at


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


def test_the_command_line_prints_a_line_for_the_accounts_file(monkeypatch, tmp_path, capsys):
    typed = iter(["by the sea", "by the sea"])
    monkeypatch.setattr(auth.getpass, "getpass", lambda prompt: next(typed))
    assert auth.main(["ana"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ana:scrypt$")
    (tmp_path / "reviewers").write_text(line + "\n")
    monkeypatch.setenv("FER_REVIEWERS_FILE", str(tmp_path / "reviewers"))
    assert auth.check_login("ana", "by the sea")
    typed = iter(["one", "two"])
    assert auth.main(["ana"]) == 1 and "differ" in capsys.readouterr().err
