"""CSRF protection for the console's POSTs: each browser gets a random session cookie, and a page
carries a token derived from it with the console's own secret. A POST must send the token in
`X-CSRF-Token`; another site can make a browser send the cookie, never read the token."""

import hashlib
import hmac
import secrets

SESSION_COOKIE = "llmkube_console_session"
CSRF_HEADER = "X-CSRF-Token"


class CsrfTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(24)

    def token(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def valid(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token(session), token)
