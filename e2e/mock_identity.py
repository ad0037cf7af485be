"""Mock identity services for workload identity and short-lived tokens.

Built on the servers of mock_cloud.py (threaded, 127.0.0.1, random port, every request
recorded with ``problem`` set when the mock refused it):

- ``MockGcpSts``: GCP Security Token Service ``POST /v1/token``, the RFC 8693 token exchange of
  workload identity federation. Accepts only the configured pool provider as ``audience`` and
  only subject tokens the identity provider issued; answers a federated access token.
- ``MockIamCredentials``: IAM Service Account Credentials
  ``POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken``, authorized by a federated
  token ``MockGcpSts`` issued, for the one service account the pool may impersonate; answers
  ``accessToken`` and ``expireTime``.
- ``MockShortLivedEntra``: the Entra ID token endpoint (client secret) issuing tokens that
  expire after ``lifetime`` seconds; ``valid_tokens()`` are those not yet expired.
"""

import datetime
import json
import secrets
import time
import urllib.parse

from mock_cloud import GCP_SCOPE, MockEntra, TokenServer, form_of, send

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
# The subject token types GCP STS takes for an OIDC provider.
OIDC_SUBJECT_TYPES = {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}


def pool_audience(project_id, pool, provider):
    return f"//iam.googleapis.com/projects/{project_id}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"


class MockGcpSts(TokenServer):
    """``POST /v1/token``: exchanges a token of ``subject_tokens()`` for a federated access token
    when the audience is ``audience``."""

    name = "gcp-sts"

    def __init__(self, audience, subject_tokens):
        super().__init__()
        self.audience, self.subject_tokens = audience, subject_tokens

    def handle(self, h, recorded):
        if recorded.method != "POST" or recorded.path != "/v1/token":
            recorded.problem = f"unexpected {recorded.method} {recorded.path}"
            return send(h, 404, {"error": "not_found", "error_description": f"{recorded.path} not found"})
        form = form_of(recorded)
        recorded.form = form
        refusal = None
        if form.get("grant_type") != TOKEN_EXCHANGE:
            refusal = "unsupported_grant_type", f"Invalid value for \"grant_type\": {form.get('grant_type')!r}"
        elif form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            refusal = "invalid_request", f"Invalid value for \"requested_token_type\": {form.get('requested_token_type')!r}"
        elif form.get("subject_token_type") not in OIDC_SUBJECT_TYPES:
            refusal = "invalid_request", f"Invalid value for \"subject_token_type\": {form.get('subject_token_type')!r}"
        elif form.get("audience") != self.audience:
            refusal = "invalid_target", f"The target service indicated by the \"audience\" parameters is invalid: {form.get('audience')!r}"
        elif GCP_SCOPE not in form.get("scope", "").split():
            refusal = "invalid_scope", f"scope {form.get('scope')!r} lacks {GCP_SCOPE}"
        elif form.get("subject_token") not in self.subject_tokens():
            refusal = "invalid_grant", "The provided subject token is not from the pool's identity provider."
        if refusal:
            recorded.problem = refusal[1]
            return send(h, 400, {"error": refusal[0], "error_description": refusal[1]})
        token = self.issue(f"ya29.d.federated-e2e-{secrets.token_urlsafe(24)}")
        send(h, 200, {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer", "expires_in": 3599})


class MockIamCredentials(TokenServer):
    """``generateAccessToken`` for ``service_account`` (an e-mail address), authorized by a token
    of ``federated_tokens()``."""

    name = "iam-credentials"

    def __init__(self, service_account, federated_tokens):
        super().__init__()
        self.service_account, self.federated_tokens = service_account, federated_tokens

    @staticmethod
    def _error(h, status, state, message):
        return send(h, status, {"error": {"code": status, "message": message, "status": state}})

    def handle(self, h, recorded):
        prefix, suffix = "/v1/projects/-/serviceAccounts/", ":generateAccessToken"
        path = recorded.path.partition("?")[0]
        if recorded.method != "POST" or not path.startswith(prefix) or not path.endswith(suffix):
            recorded.problem = f"unexpected {recorded.method} {recorded.path}"
            return self._error(h, 404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        email = urllib.parse.unquote(path[len(prefix):-len(suffix)])
        recorded.service_account = email
        auth = recorded.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.federated_tokens():
            recorded.problem = "no federated token from GCP STS"
            return self._error(h, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access "
                               "token, login cookie or other valid authentication credential.")
        if email != self.service_account:
            recorded.problem = f"service account {email}"
            return self._error(h, 403, "PERMISSION_DENIED", f"Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
                               f"(or it may not exist): projects/-/serviceAccounts/{email}")
        try:
            body = json.loads(recorded.body)
        except ValueError:
            recorded.problem = "body is not JSON"
            return self._error(h, 400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body.get("scope"), list) or GCP_SCOPE not in body["scope"]:
            recorded.problem = f"scope {body.get('scope')!r}"
            return self._error(h, 400, "INVALID_ARGUMENT", "Scope required.")
        lifetime = int(str(body.get("lifetime", "3600s")).rstrip("s"))
        token = self.issue(f"ya29.c.impersonated-e2e-{secrets.token_urlsafe(24)}")
        expire = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
        send(h, 200, {"accessToken": token, "expireTime": expire.strftime("%Y-%m-%dT%H:%M:%SZ")})


class MockShortLivedEntra(MockEntra):
    """The Entra ID v2 token endpoint (client-credentials grant with a client secret) issuing
    tokens that expire ``lifetime`` seconds after they are issued. A token counts as issued
    (``issued``, ``grants``) once its answer has been written."""

    name = "entra-short-lived"
    secret_only = True

    def __init__(self, tenant, client_id, client_secret, lifetime):
        super().__init__(tenant, client_id, client_secret)
        self.lifetime = lifetime
        self.grants = []  # (token, expires at)

    def valid_tokens(self):
        now = time.time()
        with self.lock:
            return {token for token, expires_at in self.grants if expires_at > now}

    def issued_tokens(self):
        with self.lock:
            return list(self.issued)

    def grant(self, h, recorded):
        token = f"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.short-lived-e2e-{secrets.token_urlsafe(24)}"
        recorded.token = token
        expires_at = time.time() + self.lifetime
        send(h, 200, {"token_type": "Bearer", "expires_in": self.lifetime, "ext_expires_in": self.lifetime, "access_token": token})
        with self.lock:
            self.issued.append(token)
            self.grants.append((token, expires_at))
