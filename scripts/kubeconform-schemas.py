#!/usr/bin/env python3
"""Writes the JSON schemas kubeconform validates against, one file per kind, from the OpenAPI v3
documents of a Kubernetes release (api/openapi-spec/v3 of k8s.io/kubernetes): nothing is fetched.

    kubeconform-schemas.py SPEC_DIR OUT_DIR

Files are named as kubeconform's -schema-location '{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json'
asks: deployment-apps-v1.json, and for the core group service-v1-v1.json. Schemas are strict, as
the API server's field validation is: an object with declared properties refuses any other.
"""
import json
import pathlib
import sys


def strict(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node and not node.get(
                "x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


def main(spec_dir, out_dir):
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(pathlib.Path(spec_dir).glob("*_openapi.json")):
        schemas = json.loads(path.read_text()).get("components", {}).get("schemas", {})
        strict(schemas)
        for name, schema in schemas.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                group = gvk["group"] or gvk["version"]
                target = out / f"{gvk['kind'].lower()}-{group}-{gvk['version']}.json"
                if target.exists() or gvk["kind"].endswith("List"):
                    continue
                # The kind's schema, with every definition of its document beside it for $ref.
                document = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
                target.write_text(json.dumps(document))
                written += 1
    if written == 0:
        sys.exit(f"no schemas found in {spec_dir}")
    print(f"{written} schemas in {out}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
