"""Exit 0 when two multi-document YAML files hold the same objects (any order), else print
the first difference and exit 1. Used to hold `kubectl kustomize` of aigw's folder output
against `aigw build` to stdout."""
import sys

import yaml


def objects(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    key = lambda o: (o["apiVersion"], o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
    return {key(o): o for o in docs}, len(docs)


(a, count_a), (b, count_b) = objects(sys.argv[1]), objects(sys.argv[2])
if count_a != count_b or a.keys() != b.keys():
    print(f"{count_a} vs {count_b} objects; only in the first: {sorted(a.keys() - b.keys())[:3]}, only in the second: {sorted(b.keys() - a.keys())[:3]}")
    sys.exit(1)
for k in sorted(a):
    if a[k] != b[k]:
        print(f"{k} differs")
        sys.exit(1)
print(f"{count_a} objects, identical")
