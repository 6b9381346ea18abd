"""Who TAC-X is on GitHub: a personal/bot token (`GITHUB_TOKEN`) or a GitHub App.

A GitHub App signs a short JWT (RS256, PyJWT with cryptography) with its private key, asks which
installation covers a repository (`GET /repos/{o}/{r}/installation`) and exchanges the JWT for
an installation access token (`POST /app/installations/{id}/access_tokens`). Installation tokens
live an hour; they are cached per installation in this process and replaced `REFRESH_MARGIN`
seconds before they expire, so an expired token is never sent. Nothing here is stored in the
database, written to disk, or put in a URL; the redaction patterns cover `ghs_` tokens and JWTs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests
from django.conf import settings

from .lib.redaction import redact

# Replace an installation token this long before GitHub says it expires (clock skew, long pushes).
REFRESH_MARGIN = 300.0
# GitHub accepts App JWTs of at most 10 minutes; iat is backdated for clock drift (GitHub's advice).
JWT_LIFETIME = 540
JWT_BACKDATE = 60


class GitHubAuthError(Exception):
    """The App identity could not produce a token. `permanent`: retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False):
        super().__init__(message)
        self.status = status
        self.permanent = permanent


@dataclass
class _Token:
    value: str
    expires_at: float  # epoch seconds


class TokenIdentity:
    """A fixed token for every repository (`GITHUB_TOKEN`)."""

    kind = "token"

    def __init__(self, token: str):
        self.token = token

    def token_for(self, full_name: str | None) -> str:
        return self.token

    def invalidate(self, full_name: str | None) -> None:
        pass


class AppIdentity:
    """A GitHub App: one installation token per installation, cached and refreshed."""

    kind = "app"

    def __init__(self, *, app_id: str, private_key: str, base_url: str, clock: Callable[[], float] = time.time, timeout: float = 20.0):
        if not app_id or not private_key:
            raise GitHubAuthError("a GitHub App needs GITHUB_APP_ID and a private key", permanent=True)
        self.app_id = str(app_id)
        self.private_key = private_key
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "tac-x"})
        self._lock = threading.Lock()
        self._installations: dict[str, int] = {}  # owner/name (lower case) -> installation id
        self._tokens: dict[int, _Token] = {}

    def app_jwt(self) -> str:
        import jwt  # PyJWT; RS256 needs the cryptography package

        now = int(self.clock())
        payload = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.app_id}
        try:
            return jwt.encode(payload, self.private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise GitHubAuthError(f"cannot sign the GitHub App JWT (is the private key a PEM RSA key?): {type(exc).__name__}", permanent=True) from None

    def _call(self, method: str, path: str) -> dict:
        try:
            resp = self.session.request(method, f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self.app_jwt()}"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise GitHubAuthError(f"GitHub App {method} {path}: {redact(str(exc))}") from None
        if not 200 <= resp.status_code < 300:
            try:
                message = str(resp.json().get("message", ""))
            except (ValueError, AttributeError):
                message = resp.text[:200]
            raise GitHubAuthError(
                f"GitHub App {method} {path} answered {resp.status_code}: {redact(message)}",
                status=resp.status_code,
                permanent=resp.status_code in (401, 403, 404, 422),
            )
        try:
            data = resp.json()
        except ValueError:
            raise GitHubAuthError(f"GitHub App {method} {path}: the answer is not JSON") from None
        return data if isinstance(data, dict) else {}

    def installation_id(self, full_name: str) -> int:
        key = full_name.lower()
        with self._lock:
            if key in self._installations:
                return self._installations[key]
        data = self._call("GET", f"/repos/{full_name}/installation")
        try:
            installation = int(data["id"])
        except (KeyError, TypeError, ValueError):
            raise GitHubAuthError(f"GitHub App: no installation id for {full_name}") from None
        with self._lock:
            self._installations[key] = installation
        return installation

    def token_for(self, full_name: str | None) -> str:
        """A valid installation token for the installation covering `full_name`."""
        if not full_name:
            raise GitHubAuthError("a GitHub App call needs a repository (its installation)", permanent=True)
        installation = self.installation_id(full_name)
        with self._lock:
            cached = self._tokens.get(installation)
            if cached is not None and cached.expires_at - REFRESH_MARGIN > self.clock():
                return cached.value
            self._tokens.pop(installation, None)
        try:
            data = self._call("POST", f"/app/installations/{installation}/access_tokens")
        except GitHubAuthError as exc:
            if exc.status != 404:
                raise
            # The App was reinstalled (a new installation id): look it up again, once.
            with self._lock:
                self._installations.pop(full_name.lower(), None)
            installation = self.installation_id(full_name)
            data = self._call("POST", f"/app/installations/{installation}/access_tokens")
        value, expires = data.get("token"), data.get("expires_at")
        if not isinstance(value, str) or not value or not isinstance(expires, str):
            raise GitHubAuthError("GitHub App: the access-token answer has no token or expires_at")
        try:
            expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise GitHubAuthError(f"GitHub App: cannot read expires_at {expires!r}") from None
        if expires_at - REFRESH_MARGIN <= self.clock():
            raise GitHubAuthError("GitHub App: the new installation token expires at once (is this machine's clock right?)")
        with self._lock:
            self._tokens[installation] = _Token(value, expires_at)
        return value

    def invalidate(self, full_name: str | None) -> None:
        """Forget the token (and installation) of `full_name`: GitHub refused it (revoked, the
        App reinstalled)."""
        if not full_name:
            return
        with self._lock:
            installation = self._installations.pop(full_name.lower(), None)
            if installation is not None:
                self._tokens.pop(installation, None)


_shared: dict[tuple, AppIdentity] = {}
_shared_lock = threading.Lock()


def app_private_key() -> str:
    """The App's PEM key from GITHUB_APP_PRIVATE_KEY (literal `\\n` allowed, for one-line
    environment files) or the file named by GITHUB_APP_PRIVATE_KEY_FILE."""
    key = settings.GITHUB_APP_PRIVATE_KEY
    if key:
        return key.replace("\\n", "\n")
    if settings.GITHUB_APP_PRIVATE_KEY_FILE:
        try:
            return Path(settings.GITHUB_APP_PRIVATE_KEY_FILE).read_text()
        except OSError as exc:
            raise GitHubAuthError(f"cannot read GITHUB_APP_PRIVATE_KEY_FILE: {exc.strerror}", permanent=True) from None
    return ""


def app_configured() -> bool:
    return bool(settings.GITHUB_APP_ID)


def identity(*, base_url: str | None = None) -> TokenIdentity | AppIdentity:
    """The configured identity: the GitHub App when GITHUB_APP_ID is set, else GITHUB_TOKEN.

    App identities are shared by every client of this process (one token cache)."""
    base_url = (base_url or settings.GITHUB_API_URL).rstrip("/")
    if not app_configured():
        return TokenIdentity(settings.GITHUB_TOKEN)
    key = app_private_key()
    cache_key = (base_url, str(settings.GITHUB_APP_ID), key)
    with _shared_lock:
        found = _shared.get(cache_key)
        if found is None:
            found = _shared[cache_key] = AppIdentity(app_id=str(settings.GITHUB_APP_ID), private_key=key, base_url=base_url)
        return found


def forget_shared_identities() -> None:
    """Drop cached App identities and their tokens (tests change settings)."""
    with _shared_lock:
        _shared.clear()
