"""Who may write labels: reviewer accounts from the environment, and signed session tokens.

Accounts come from the environment, never from the repository (both may be set; the file's entries come last):
  FER_REVIEWERS="alice:secret,bob:pw"      name:password pairs (a password cannot contain a comma here)
  FER_REVIEWERS_FILE=/etc/fer/reviewers     one `name:password` or `name:<SHA-256 hex of the password>` per line;
                                            blank lines and lines starting with # are ignored
Names and passwords are trimmed of surrounding spaces. A 64-hex-digit value in the file is taken as a SHA-256
digest (`python -c "import fer.auth as a; print(a.hash_password('pw'))"`), anything else as the password itself.

After `check_login`, `issue_token(name)` gives the browser session a token: the name and an expiry time signed with
HMAC-SHA256 under $FER_SESSION_SECRET, or under a random secret made once per process (tokens then stop working when
the server restarts, and are not shared between processes). `verify_token` returns the name, or None for a forged,
expired or revoked token or a reviewer no longer configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

from fer.labels import MAX_REVIEWER_LENGTH

logger = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 12 * 3600  # one working day; signing in again is cheap
SETUP_HELP = (
    "Reviewing is off: no reviewer accounts are configured. Set FER_REVIEWERS=\"alice:secret,bob:pw\", or "
    "FER_REVIEWERS_FILE to a file of name:password (or name:<sha256 hex of the password>) lines, and restart the app. "
    "Set FER_SESSION_SECRET too so sign-ins survive a restart."
)
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_DUMMY_DIGEST = hashlib.sha256(b"no such reviewer").digest()

_process_secret: bytes | None = None
_secret_lock = threading.Lock()
_revoked: dict[str, float] = {}  # token signature -> expiry, so the set empties itself
_revoked_lock = threading.Lock()


def hash_password(password: str) -> str:
    """The SHA-256 hex digest to put in FER_REVIEWERS_FILE instead of the password."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def _parse_entry(entry: str, where: str, from_file: bool) -> tuple[str, bytes] | None:
    name, separator, secret = entry.partition(":")
    name, secret = name.strip(), secret.strip()
    if not separator or not name or not secret:
        logger.warning("Ignoring reviewer entry %s: expected name:password", where)
        return None
    if len(name) > MAX_REVIEWER_LENGTH or any(not char.isprintable() for char in name) or "," in name:
        logger.warning("Ignoring reviewer entry %s: names are printable, without commas, at most %d characters",
                       where, MAX_REVIEWER_LENGTH)
        return None
    if from_file and _HEX_DIGEST.fullmatch(secret):
        return name, bytes.fromhex(secret)
    return name, hashlib.sha256(secret.encode("utf-8")).digest()


def _accounts() -> dict[str, bytes]:
    """name -> SHA-256 digest of the password, read from the environment at call time."""
    accounts: dict[str, bytes] = {}
    for position, entry in enumerate(os.environ.get("FER_REVIEWERS", "").split(","), start=1):
        if entry.strip() and (parsed := _parse_entry(entry, f"{position} of FER_REVIEWERS", from_file=False)):
            accounts[parsed[0]] = parsed[1]
    file_name = os.environ.get("FER_REVIEWERS_FILE")
    if file_name:
        try:
            lines = Path(file_name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            logger.warning("Cannot read FER_REVIEWERS_FILE %s (%s); its reviewers cannot sign in", file_name, error)
            lines = []
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                if parsed := _parse_entry(line, f"on line {number} of {file_name}", from_file=True):
                    accounts[parsed[0]] = parsed[1]
    return accounts


def reviewers_configured() -> bool:
    """Whether any reviewer account is configured; without one, show SETUP_HELP instead of the review tools."""
    return bool(_accounts())


def reviewer_names() -> list[str]:
    return sorted(_accounts())


def check_login(name: str, password: str) -> bool:
    """Whether `password` is `name`'s; compared in constant time, with the same work for unknown names."""
    if not isinstance(name, str) or not isinstance(password, str) or not password:
        return False
    supplied = hashlib.sha256(password.encode("utf-8")).digest()
    expected = _accounts().get(name.strip())
    if expected is None:
        hmac.compare_digest(supplied, _DUMMY_DIGEST)
        return False
    return hmac.compare_digest(supplied, expected)


def _secret() -> bytes:
    global _process_secret
    configured = os.environ.get("FER_SESSION_SECRET")
    if configured:
        return configured.encode("utf-8")
    with _secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
        return _process_secret


def _now() -> float:
    return time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: str) -> str:
    return _b64(hmac.new(_secret(), payload.encode("ascii"), hashlib.sha256).digest())


def issue_token(name: str, lifetime_s: float = TOKEN_LIFETIME_S) -> str:
    """A signed session token for a configured reviewer (call after check_login); ValueError for anyone else."""
    name = name.strip() if isinstance(name, str) else name
    if name not in _accounts():
        raise ValueError(f"{name!r} is not a configured reviewer.")
    payload = f"{_b64(name.encode('utf-8'))}.{int(_now() + lifetime_s)}.{_b64(secrets.token_bytes(12))}"
    return f"{payload}.{_sign(payload)}"


def verify_token(token: str) -> str | None:
    """The reviewer a token was issued to, or None if it is malformed, forged, expired, revoked, or the reviewer
    is no longer configured."""
    if not isinstance(token, str) or not token.isascii() or token.count(".") != 3 or len(token) > 1024:
        return None
    payload, signature = token.rsplit(".", 1)
    if not hmac.compare_digest(signature.encode("ascii"), _sign(payload).encode("ascii")):
        return None
    encoded_name, expiry, _ = payload.split(".")
    try:
        name = _unb64(encoded_name).decode("utf-8")
        expires = int(expiry)
    except (ValueError, binascii.Error):
        return None
    if expires <= _now() or name not in _accounts():
        return None
    with _revoked_lock:
        if signature in _revoked:
            return None
    return name


def revoke_token(token: str) -> None:
    """Sign a token out (in this process) before it expires."""
    if verify_token(token) is None:
        return
    payload, signature = token.rsplit(".", 1)
    now = _now()
    with _revoked_lock:
        for old, expires in list(_revoked.items()):
            if expires <= now:
                del _revoked[old]
        _revoked[signature] = float(payload.split(".")[1])
