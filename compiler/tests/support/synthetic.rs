//! Synthetic input at scale, shared by tests and benchmarks: each route has three rules, each
//! matching its own model and sending it to its own AIServiceBackend.

/// The `rules:` entries of route `r`: rule `k` matches model `model-{r}-{k}` and sends it to
/// `backend-{r}-{k}` as model `upstream-{k}`.
pub fn route_rules(r: usize) -> String {
    (0..3)
        .map(|k| {
            format!(
                "  - matches:\n    - headers: [{{name: x-ai-eg-model, value: model-{r}-{k}}}]\n    backendRefs: [{{name: backend-{r}-{k}, modelNameOverride: upstream-{k}}}]\n"
            )
        })
        .collect()
}

/// The documents behind the rules of route `r` in namespace `ai`: for each rule an
/// AIServiceBackend and its Backend (`provider-{k}.example.com`), and with `api_keys` a
/// BackendSecurityPolicy reading Secret `provider-{k}-key`.
pub fn route_backends(r: usize, api_keys: bool) -> String {
    let mut text = String::new();
    for k in 0..3 {
        text.push_str(&format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: backend-{r}-{k}, namespace: ai}}\nspec:\n  schema: {{name: OpenAI}}\n  backendRef: {{name: backend-{r}-{k}, kind: Backend, group: gateway.envoyproxy.io}}\n---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: backend-{r}-{k}, namespace: ai}}\nspec:\n  endpoints: [{{fqdn: {{hostname: provider-{k}.example.com, port: 443}}}}]\n"
        ));
        if api_keys {
            text.push_str(&format!(
                "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: key-{r}-{k}, namespace: ai}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: backend-{r}-{k}}}]\n  type: APIKey\n  apiKey: {{secretRef: {{name: provider-{k}-key}}}}\n"
            ));
        }
    }
    text
}
