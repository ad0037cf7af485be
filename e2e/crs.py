"""Builders of the custom resources the end-to-end gateways are compiled from."""

import json


def service_backend(name, schema, backend, version=None):
    """An AIServiceBackend of `schema` in front of the EG Backend `backend`."""
    version = f", version: {version}" if version else ""
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: ai}}
spec:
  schema: {{name: {schema}{version}}}
  backendRef: {{name: {backend}, kind: Backend, group: gateway.envoyproxy.io}}
"""


def endpoint(name, port):
    """An EG Backend on 127.0.0.1:`port`."""
    return f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: ai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
"""


def policy(name, targets, body):
    """A BackendSecurityPolicy on one AIServiceBackend (a name) or several (a list); `body` is
    the rest of its spec, indented by two spaces."""
    if isinstance(targets, str):
        targets = [targets]
    refs = "".join(f"  - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {t}}}\n" for t in targets)
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}, namespace: ai}}
spec:
  targetRefs:
{refs}{body}"""


def secret(name, key, value):
    """A Secret with one key."""
    return f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: ai}}
stringData:
  {key}: {json.dumps(value)}
"""
