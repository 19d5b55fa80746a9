#!/usr/bin/env bash
# `make demo`: the local control plane, ooda's CRDs and the examples, shown with kubectl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"

"$repo/scripts/cluster-up.sh"
kubectl apply --server-side --field-manager ooda-demo -f crds/
kubectl wait --for condition=Established crd/organisations.ooda.run crd/projects.ooda.run --timeout 60s
kubectl apply --server-side --field-manager ooda-demo -f examples/organisation.yaml
# The operator creates org-<name> namespaces; until it runs, the demo makes the example's itself.
kubectl create namespace org-acme --dry-run=client -o yaml | kubectl apply --server-side --field-manager ooda-demo -f -
kubectl apply --server-side --field-manager ooda-demo -f examples/project.yaml
echo
kubectl get nodes -L topology.kubernetes.io/region
echo
kubectl get organisations,projects -A -o wide
echo
echo "The cluster keeps running. Use it with: export KUBECONFIG=$kubeconfig (kubectl: $k8s_bin/kubectl)"
echo "Stop it with: make cluster-down"
