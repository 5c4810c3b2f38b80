"""A real OpenID Connect provider on loopback for the OAuth 2.0 mailbox tests.

``OidcProvider`` runs ``tests/support/oidc_provider/server.mjs`` (the certified ``oidc-provider``
package from npm, installed there by ``make install`` with ``npm ci``) over HTTPS with a certificate
of its own test CA. It knows two clients: the CRM (``client_id``/``client_secret``, the authorization
code + refresh token grants, ``redirect_uris`` as given) and Dovecot (``introspection_url`` carries
its credentials). Access tokens live ``access_token_ttl`` seconds, so expiry happens inside a test.

    with OidcProvider(redirect_uris=[...]) as idp:
        tokens = idp.sign_in("alice@example.com")     # the authorization code flow, over HTTP
        idp.revoke(tokens["refresh_token"])

Every e-mail address is an account: signing in as it makes it the token's ``sub`` and ``email``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from plugins.imap_inbox.testing.dovecot import (
    _cert_pem,
    _free_port,
    _key_pem,
    _make_ca,
    _make_server_cert,
    _write_pem,
)

SERVER_DIR = Path(__file__).resolve().parent / "oidc_provider"
INSTALL_HINT = "npm ci --prefix tests/support/oidc_provider (make install does it)"
SCOPE = "openid email offline_access"


class OidcProviderError(RuntimeError):
    """Node or the npm packages are missing, or the provider did not start."""


class OidcProvider:
    """See the module docstring."""

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str] = ("http://127.0.0.1/callback",),
        access_token_ttl: int = 30,
        refresh_token_ttl: int = 3600,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
    ) -> None:
        self._node = shutil.which("node")
        if not self._node:
            raise OidcProviderError("Node.js is not installed (no 'node' on PATH): apt-get install nodejs")
        if not (SERVER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise OidcProviderError(f"the oidc-provider package is not installed: {INSTALL_HINT}")
        self.host = host
        self.port = _free_port([host])
        self.issuer = f"https://{host}:{self.port}"
        self.client_id = "crm"
        self.client_secret = secrets.token_urlsafe(24)
        self.redirect_uris = list(redirect_uris)
        self.startup_timeout = startup_timeout
        self._introspector_secret = secrets.token_urlsafe(24)
        self.root = Path(tempfile.mkdtemp(prefix="oidc-provider-"))
        self.root.chmod(0o755)
        self.ca_file = str(self.root / "ca.pem")
        ca_key, ca_cert = _make_ca("oidc-provider test CA")
        key, cert = _make_server_cert(ca_key, ca_cert, [host], ["localhost"])
        # Dovecot's unprivileged auth process reads the CA to check the introspection endpoint.
        _write_pem(Path(self.ca_file), _cert_pem(ca_cert))
        _write_pem(self.root / "server.pem", _cert_pem(cert))
        _write_pem(self.root / "server.key", _key_pem(key), 0o600)
        self.config = {
            "issuer": self.issuer,
            "host": host,
            "port": self.port,
            "cert": str(self.root / "server.pem"),
            "key": str(self.root / "server.key"),
            "accessTokenTtl": access_token_ttl,
            "refreshTokenTtl": refresh_token_ttl,
            "clients": [
                {
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "client_name": "Test CRM",
                    "redirect_uris": self.redirect_uris,
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                },
                {
                    "client_id": "dovecot",
                    "client_secret": self._introspector_secret,
                    "redirect_uris": [],
                    "grant_types": [],
                    "response_types": [],
                },
            ],
        }
        self._proc: subprocess.Popen[str] | None = None
        self._output: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> OidcProvider:
        config_path = self.root / "config.json"
        config_path.write_text(json.dumps(self.config))
        config_path.chmod(0o600)
        self._proc = subprocess.Popen(
            [self._node, str(SERVER_DIR / "server.mjs"), str(config_path)],
            cwd=SERVER_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._read_output, args=(ready,), daemon=True).start()
        if not ready.wait(self.startup_timeout):
            self.close()
            raise OidcProviderError("oidc-provider did not start:\n" + "".join(self._output))
        return self

    def _read_output(self, ready: threading.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._output.append(line)
            if line.startswith("listening "):
                ready.set()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ endpoints

    @property
    def introspection_url(self) -> str:
        """The RFC 7662 endpoint with Dovecot's client credentials, as Dovecot's oauth2 passdb takes it."""
        return f"https://dovecot:{self._introspector_secret}@{self.host}:{self.port}/token/introspection"

    def metadata(self) -> dict:
        return self._http().get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()

    def _http(self) -> requests.Session:
        session = requests.Session()
        # Else REQUESTS_CA_BUNDLE from the environment wins over session.verify (a requests quirk).
        session.trust_env = False
        session.verify = self.ca_file
        return session

    def _client_auth(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)

    # ------------------------------------------------------------------ what a test does with it

    def authorize(self, email: str, *, redirect_uri: str | None = None, scope: str = SCOPE,
                  consent: bool = True) -> dict[str, str]:
        """Walk the authorization code flow with PKCE as a browser would; the redirect's query parameters."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = redirect_uri or self.redirect_uris[0]
        request = requests.Request("GET", self.metadata()["authorization_endpoint"], params={
            "client_id": self.client_id, "response_type": "code", "redirect_uri": redirect_uri,
            "scope": scope, "state": "s", "prompt": "consent", "code_challenge": challenge,
            "code_challenge_method": "S256",
        }).prepare()
        location = self.answer(request.url, email, consent=consent)
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        params["code_verifier"] = verifier
        params["redirect_uri"] = redirect_uri
        return params

    def answer(self, authorization_url: str, email: str, *, consent: bool = True) -> str:
        """Sign in as ``email`` at ``authorization_url`` and allow (or deny) access, as a person would in a
        browser; returns the URL the provider sends the browser back to (the client's redirect URI)."""
        http = self._http()
        redirect_uri = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
        response = http.get(authorization_url, allow_redirects=False, timeout=10)
        for form_action, data in ((r'action="(/interaction/[^"]+/login)"', {"login": email}),
                                  (r'action="(/interaction/[^"]+/(?:consent|deny))"', {})):
            page = self._follow(http, response)
            actions = re.findall(form_action, page.text)
            if not actions:
                raise OidcProviderError(f"no form {form_action} on the provider's page:\n{page.text[:500]}")
            action = actions[0] if consent or "login" in form_action else actions[-1]
            response = http.post(urljoin(self.issuer, action), data=data, allow_redirects=False, timeout=10)
        while response.is_redirect and not response.headers["location"].startswith(redirect_uri):
            response = http.get(urljoin(self.issuer, response.headers["location"]), allow_redirects=False,
                                timeout=10)
        location = response.headers.get("location", "")
        if not location.startswith(redirect_uri):
            raise OidcProviderError(f"the provider did not redirect back: {response.status_code} {response.text[:300]}")
        return location

    def _follow(self, http: requests.Session, response: requests.Response) -> requests.Response:
        while response.is_redirect:
            response = http.get(urljoin(self.issuer, response.headers["location"]), allow_redirects=False,
                                timeout=10)
        return response

    def sign_in(self, email: str, *, scope: str = SCOPE) -> dict:
        """A fresh token response (access, refresh and id token) for ``email``, through the real flow."""
        params = self.authorize(email, scope=scope)
        response = self._http().post(f"{self.issuer}/token", auth=self._client_auth(), timeout=10, data={
            "grant_type": "authorization_code", "code": params["code"], "redirect_uri": params["redirect_uri"],
            "code_verifier": params["code_verifier"],
        })
        response.raise_for_status()
        tokens = response.json()
        tokens["obtained_at"] = time.time()
        return tokens

    def register_client(self, redirect_uris: Sequence[str]) -> tuple[str, str]:
        """Register one more client (dynamic registration, RFC 7591); its ``(client_id, client_secret)``."""
        response = self._http().post(f"{self.issuer}/reg", timeout=10, json={
            "redirect_uris": list(redirect_uris), "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "client_name": "Test CRM (browser)"})
        response.raise_for_status()
        client = response.json()
        return client["client_id"], client["client_secret"]

    def revoke(self, token: str) -> None:
        """Revoke a token (a refresh token revokes its whole grant, its access tokens too)."""
        response = self._http().post(f"{self.issuer}/token/revocation", auth=self._client_auth(),
                                     data={"token": token}, timeout=10)
        response.raise_for_status()

    def introspect(self, token: str) -> dict:
        response = self._http().post(f"{self.issuer}/token/introspection", auth=self._client_auth(),
                                     data={"token": token}, timeout=10)
        response.raise_for_status()
        return response.json()
