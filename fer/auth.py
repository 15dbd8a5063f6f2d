"""Who may write labels: reviewer accounts from the environment, sign-in with back-off, and signed session tokens.

Accounts come from the environment, never from the repository (both may be set; the file's entries come last):
  FER_REVIEWERS="alice:secret,bob:pw"      name:password pairs (a password cannot contain a comma here)
  FER_REVIEWERS_FILE=/etc/fer/reviewers     one `name:<hash>` (or `name:password`) per line; blank lines and lines
                                            starting with # are ignored
In the file a password may be stored as `scrypt$...` (`python -m fer.auth` prints one: salted, slow to guess), as
the SHA-256 hex digest of the password (the older format, still accepted), or as the password itself. Names and
passwords are trimmed of surrounding spaces.

A name is the reviewer as fer.labels stores them (`labels.clean_reviewer`: normalised, invisible characters removed,
neutralised against spreadsheet formulas). Two entries whose names clean to the same text, ignoring case, would be
one reviewer in the labels, so such a configuration is refused as a whole: nobody signs in until one is renamed
(`check_accounts` says which; the app refuses to start). The same name given twice is one account: the later
entry wins.

`sign_in(name, password, client)` checks the password with a back-off (fer.throttle) per account and per client
address: after 5 failures each further try must wait, 2 s and doubling up to 5 minutes. It returns a token: the
name and an expiry time signed with HMAC-SHA256 under $FER_SESSION_SECRET, or under a random secret made once per
process (tokens then stop working when the server restarts, and are not shared between processes). The browser
keeps the token, so with FER_SESSION_SECRET set a sign-in survives a restart. `verify_token` returns the name, or
None for a forged, expired or revoked token or a reviewer no longer configured. Revocations (sign-outs) are kept in
this process only: the browser forgets its token on sign-out, but a copy of it works after a restart until it expires.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path

from fer import labels
from fer.errors import FerError
from fer.throttle import Throttle

logger = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 12 * 3600  # one working day; signing in again is cheap
SIGNED_OUT = "signed-out"  # what the browser keeps after signing out (Gradio's browser storage ignores an empty value)
SETUP_HELP = (
    "Reviewing is off: no reviewer accounts are configured. Set FER_REVIEWERS=\"alice:secret,bob:pw\", or "
    "FER_REVIEWERS_FILE to a file of name:<hash> lines (`python -m fer.auth` prints one), and restart the app. "
    "Set FER_SESSION_SECRET too so sign-ins survive a restart."
)
WRONG = "Wrong reviewer name or password."
# scrypt at N=2^15, r=8: 32 MiB and about 0.1 s a check; the back-off limits online guessing, this offline guessing.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 2**20
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

_process_secret: bytes | None = None
_secret_lock = threading.Lock()
_revoked: dict[str, float] = {}  # token signature -> expiry, so the set empties itself
_revoked_lock = threading.Lock()
_throttle = Throttle()
_parsed: tuple[tuple, dict, str | None] | None = None  # the last configuration read, so its warnings print once
_parsed_lock = threading.Lock()


class AuthError(FerError):
    """A sign-in was refused: wrong name or password, too many failures, or accounts misconfigured."""


# ------------------------------------------------------------------------------------------------ passwords


@dataclasses.dataclass(frozen=True)
class _Password:
    """How one account's password is stored: "scrypt" (salt, parameters, digest), "sha256" or "plain" (digest)."""

    kind: str
    digest: bytes
    salt: bytes = b""
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def matches(self, password: str) -> bool:
        """Compared in constant time; always one scrypt derivation, so no format answers faster than another."""
        if self.kind == "scrypt":
            supplied = _scrypt(password, self.salt, self.n, self.r, self.p)
        else:
            _scrypt(password, _DUMMY.salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            supplied = hashlib.sha256(password.encode("utf-8")).digest()
        return hmac.compare_digest(supplied, self.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str) -> str:
    """The `scrypt$N$r$p$salt$digest` line to put in FER_REVIEWERS_FILE instead of the password (salt and digest
    in URL-safe base64)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_scrypt(text: str) -> _Password | None:
    try:
        kind, n, r, p, salt, digest = text.split("$")
        n, r, p = int(n), int(r), int(p)
        salt_bytes, digest_bytes = _unb64(salt), _unb64(digest)
    except (ValueError, binascii.Error):
        return None
    # Bounds keep a hand-edited line from asking for gigabytes per check; N must be a power of two.
    if kind != "scrypt" or not (2 <= n <= 2**17 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4
                                and 128 * r * n <= _SCRYPT_MAXMEM // 2 and len(digest_bytes) == 32 and salt_bytes):
        return None
    return _Password("scrypt", digest_bytes, salt_bytes, n, r, p)


_DUMMY = _Password("scrypt", bytes(32), b"no such reviewer")  # what an unknown name is checked against


# ------------------------------------------------------------------------------------------------ accounts


def _parse_entry(entry: str, where: str, from_file: bool) -> tuple[str, _Password] | None:
    name, separator, secret = entry.partition(":")
    name, secret = name.strip(), secret.strip()
    if not separator or not name or not secret:
        logger.warning("Ignoring reviewer entry %s: expected name:password", where)
        return None
    try:
        cleaned = labels.clean_reviewer(name)
    except labels.LabelsError as error:
        logger.warning("Ignoring reviewer entry %s: %s", where, error)
        return None
    if "," in cleaned:
        logger.warning("Ignoring reviewer entry %s: names cannot contain commas", where)
        return None
    if from_file and secret.startswith("scrypt$"):
        password = _parse_scrypt(secret)
        if password is None:
            logger.warning("Ignoring reviewer entry %s: a malformed scrypt hash (make one with python -m fer.auth)",
                           where)
            return None
        return cleaned, password
    if from_file and _HEX_DIGEST.fullmatch(secret):
        return cleaned, _Password("sha256", bytes.fromhex(secret))
    return cleaned, _Password("plain", hashlib.sha256(secret.encode("utf-8")).digest())


def _read_accounts() -> tuple[dict[str, _Password], str | None]:
    """(name -> password, None), or ({}, why) when two different entries are one reviewer once cleaned."""
    entries: list[tuple[str, str, bool]] = []  # (text, where, from_file)
    for position, entry in enumerate(os.environ.get("FER_REVIEWERS", "").split(","), start=1):
        if entry.strip():
            entries.append((entry, f"{position} of FER_REVIEWERS", False))
    file_name = os.environ.get("FER_REVIEWERS_FILE")
    text = ""
    if file_name:
        try:
            text = Path(file_name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            text = f"\0{error}"  # remembered in the cache key, so the warning prints once
    key = (os.environ.get("FER_REVIEWERS", ""), file_name, text)
    global _parsed
    with _parsed_lock:
        if _parsed is not None and _parsed[0] == key:
            return _parsed[1], _parsed[2]
        if text.startswith("\0"):
            logger.warning("Cannot read FER_REVIEWERS_FILE %s (%s); its reviewers cannot sign in", file_name, text[1:])
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip() and not line.lstrip().startswith("#"):
                    entries.append((line, f"on line {number} of {file_name}", True))
        accounts: dict[str, _Password] = {}
        seen: dict[str, tuple[str, str]] = {}  # casefolded name -> (raw name, where)
        problem = None
        for entry, where, from_file in entries:
            parsed = _parse_entry(entry, where, from_file)
            if parsed is None:
                continue
            name, password = parsed
            raw = entry.partition(":")[0].strip()
            earlier = seen.get(name.casefold())
            if earlier is not None and earlier[0] != raw:
                problem = (f"Reviewer accounts {earlier[0]!r} ({earlier[1]}) and {raw!r} ({where}) are the same "
                           f"reviewer once names are cleaned ({name!r}); rename one of them. Nobody can sign in "
                           "until then.")
                break
            seen[name.casefold()] = (raw, where)
            accounts.pop(name, None)  # the later entry wins, and counts as the newer one
            accounts[name] = password
        if problem:
            logger.error("%s", problem)
            accounts = {}
        _parsed = (key, accounts, problem)
        return accounts, problem


def _accounts() -> dict[str, _Password]:
    return _read_accounts()[0]


def check_accounts() -> None:
    """AuthError naming the two entries when the configured accounts collide (see the module's docstring)."""
    problem = _read_accounts()[1]
    if problem:
        raise AuthError(problem)


def reviewers_configured() -> bool:
    """Whether any reviewer can sign in; without one, show SETUP_HELP instead of the review tools."""
    return bool(_accounts())


def reviewer_names() -> list[str]:
    return sorted(_accounts())


def account_name(name) -> str | None:
    """`name` as the account it would sign in to (cleaned as labels stores it); None if it cannot be a name."""
    try:
        return labels.clean_reviewer(name)
    except labels.LabelsError:
        return None


def check_login(name: str, password: str) -> bool:
    """Whether `password` is `name`'s; constant-time, with the same scrypt work for unknown names. No back-off:
    `sign_in` adds that."""
    if not isinstance(name, str) or not isinstance(password, str) or not password:
        return False
    cleaned = account_name(name)
    stored = _accounts().get(cleaned) if cleaned else None
    if stored is None:
        _DUMMY.matches(password)
        return False
    return stored.matches(password)


def sign_in(name, password, client: str | None = None) -> str:
    """Check a reviewer's name and password with a back-off; return a session token (see `issue_token`).

    AuthError, with a message for the person signing in, when accounts are missing or misconfigured, the name or
    password is wrong, or this account or `client` (an address) failed too often lately and must wait.
    """
    accounts, problem = _read_accounts()
    if problem:
        raise AuthError("Reviewer sign-in is off: two reviewer accounts have the same name once cleaned. The server "
                        "log names them; rename one and restart.")
    if not accounts:
        raise AuthError(SETUP_HELP)
    if not isinstance(name, str) or not isinstance(password, str) or not name.strip() or not password:
        raise AuthError(WRONG)
    cleaned = account_name(name)
    # Keys are cut short: names that are not accounts are counted too (or guessing would reveal which names are),
    # and must not let a caller fill memory with long ones.
    keys = (f"account:{(cleaned or name)[:100].casefold()}", f"client:{client[:100]}" if client else None)
    wait = _throttle.wait_s(*keys)
    if wait > 0:
        raise AuthError(f"Too many failed sign-ins for this reviewer or from this address; try again in "
                        f"{max(1, round(wait))} s.")
    if not check_login(name, password):
        _throttle.failed(*keys)
        raise AuthError(WRONG)
    _throttle.succeeded(keys[0])
    return issue_token(cleaned)


# ------------------------------------------------------------------------------------------------ tokens


def _secret() -> bytes:
    global _process_secret
    configured = os.environ.get("FER_SESSION_SECRET")
    if configured:
        return configured.encode("utf-8")
    with _secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
        return _process_secret


def storage_secret() -> str:
    """A key for the browser's copy of the token, derived from the session secret (the browser sees this key, never
    the secret), so a restart with the same FER_SESSION_SECRET can read what the browser kept."""
    return hmac.new(_secret(), b"fer browser storage", hashlib.sha256).hexdigest()[:32]


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
    cleaned = account_name(name)
    if cleaned is None or cleaned not in _accounts():
        raise ValueError(f"{name!r} is not a configured reviewer.")
    payload = f"{_b64(cleaned.encode('utf-8'))}.{int(_now() + lifetime_s)}.{_b64(secrets.token_bytes(12))}"
    return f"{payload}.{_sign(payload)}"


def verify_token(token) -> str | None:
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


def token_expiry(token) -> float | None:
    """When a valid token expires (seconds since the epoch); None for a token `verify_token` refuses."""
    if verify_token(token) is None:
        return None
    return float(token.split(".")[1])


def revoke_token(token) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """`python -m fer.auth [NAME]`: ask for a password (not echoed) and print the FER_REVIEWERS_FILE line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m fer.auth [NAME]   (asks for the password; prints NAME:scrypt$...)", file=sys.stderr)
        return 2
    name = args[0] if args else input("Reviewer name: ")
    if account_name(name) is None:
        print("error: a reviewer name is 1 to 64 visible characters", file=sys.stderr)
        return 2
    password = getpass.getpass("Password: ")
    if not password or password != getpass.getpass("Again: "):
        print("error: the passwords are empty or differ", file=sys.stderr)
        return 1
    print(f"{name.strip()}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
