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


def gateway(listener):
    """The Gateway `e2e` with one HTTP listener on `listener`."""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: e2e, namespace: ai}}
spec:
  gatewayClassName: envoy-gateway
  listeners:
  - {{name: http, protocol: HTTP, port: {listener}}}
"""


def gateway_and_route(listener, route, models, family, costs=False):
    """The Gateway `e2e` on `listener` and the AIGatewayRoute `route` with one rule per model of
    `family` in `models` ({model: (family, backend, modelNameOverride)})."""
    rules = "".join(
        f"  - matches: [{{headers: [{{name: x-ai-eg-model, value: '{model}'}}]}}]\n"
        f"    backendRefs: [{{name: {backend}, modelNameOverride: '{override}'}}]\n"
        for model, (fam, backend, override) in models.items() if fam == family)
    cost_lines = """  llmRequestCosts:
  - {metadataKey: llm_input_token, type: InputToken}
  - {metadataKey: llm_output_token, type: OutputToken}
  - {metadataKey: llm_total_token, type: TotalToken}
""" if costs else ""
    return gateway(listener) + f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {route}, namespace: ai}}
spec:
  parentRefs: [{{name: e2e}}]
{cost_lines}  rules:
{rules}"""
