"""Builders of the custom resources the end-to-end gateways are compiled from."""

import json

# The llmRequestCosts of a route that records the token usage: (metadataKey, type).
TOKEN_COSTS = (("llm_input_token", "InputToken"), ("llm_output_token", "OutputToken"), ("llm_total_token", "TotalToken"))
# The spec field that holds the settings of each type of BackendSecurityPolicy.
CREDENTIAL_FIELDS = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey",
                     "AWSCredentials": "awsCredentials", "AzureCredentials": "azureCredentials", "GCPCredentials": "gcpCredentials"}


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


def credentials(kind, settings, rest=""):
    """The body of a BackendSecurityPolicy (see `policy`) of type `kind` (a key of
    CREDENTIAL_FIELDS): `settings` are the fields of its section, indented by four spaces, and
    `rest` more of its spec (as credentialOverride), indented by two."""
    return f"  type: {kind}\n  {CREDENTIAL_FIELDS[kind]}:\n{settings}{rest}"


def credentials_file(secret_name, profile=None):
    """The `credentialsFile` settings of AWSCredentials or GCPCredentials: the file in the Secret
    `secret_name` (for AWS, its `profile`)."""
    profile = f"      profile: {profile}\n" if profile else ""
    return f"    credentialsFile:\n      secretRef: {{name: {secret_name}}}\n{profile}"


def aws_profile(access_key_id, secret_access_key, profile="default"):
    """One profile of an AWS shared credentials file."""
    return f"[{profile}]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"


def api_key(name, targets, value, kind="APIKey"):
    """A BackendSecurityPolicy `name` of `kind` (APIKey, AzureAPIKey or AnthropicAPIKey) on
    `targets` whose key `value` is in the Secret `name`."""
    return policy(name, targets, credentials(kind, f"    secretRef: {{name: {name}}}\n")) + secret(name, "apiKey", value)


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


def rule(models, refs, extra=""):
    """One AIGatewayRoute rule: the requests for `models` (one name or a list) go to `refs` (a
    list of backendRefs, each a YAML flow mapping); `extra` is the rest of the rule, indented
    by four spaces."""
    if isinstance(models, str):
        models = [models]
    matches = "".join(f"    - headers: [{{name: x-ai-eg-model, value: '{model}'}}]\n" for model in models)
    backend_refs = "".join(f"    - {ref}\n" for ref in refs)
    return f"  - matches:\n{matches}    backendRefs:\n{backend_refs}{extra}"


def route(name, rules, costs=()):
    """The AIGatewayRoute `name` on the Gateway `e2e` with `rules` (the text of its rules, see
    `rule`) and `costs`, its llmRequestCosts as (metadataKey, type) or (metadataKey, "CEL",
    expression)."""
    def cost_line(key, kind, cel=None):
        cel = f", cel: {json.dumps(cel)}" if cel else ""
        return f"  - {{metadataKey: {key}, type: {kind}{cel}}}\n"

    cost_lines = "".join(cost_line(*cost) for cost in costs)
    if cost_lines:
        cost_lines = "  llmRequestCosts:\n" + cost_lines
    return f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: ai}}
spec:
  parentRefs: [{{name: e2e}}]
{cost_lines}  rules:
{rules}"""


def gateway_and_route(listener, route_name, models, costs=False):
    """The Gateway `e2e` on `listener` and the AIGatewayRoute `route_name` with one rule per
    model in `models` ({model: (backend, modelNameOverride)}), recording the token usage when
    `costs`."""
    rules = "".join(rule(model, [f"{{name: {backend}, modelNameOverride: '{override}'}}"])
                    for model, (backend, override) in models.items())
    return gateway(listener) + route(route_name, rules, TOKEN_COSTS if costs else ())
