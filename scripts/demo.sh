#!/usr/bin/env bash
# `make demo`: the local control plane, the operator, and the examples, shown with kubectl.
# Everything keeps running afterwards; `make cluster-down` stops it all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"

cargo build --locked
"$repo/scripts/cluster-up.sh"
kubectl apply --server-side --force-conflicts --field-manager ooda-bed -f crds/ >/dev/null
kubectl create namespace ooda-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

operator_addr="127.0.0.1:${OODA_OPERATOR_PORT:-18080}"
if ! alive ooda-operator; then
  log "starting the operator (log: $logs/ooda-operator.log)"
  KUBECONFIG="$kubeconfig" setsid "$CARGO_TARGET_DIR/debug/ooda" operator \
    --config examples/operator-config.yaml --http-addr "$operator_addr" --namespace ooda-system \
    >"$logs/ooda-operator.log" 2>&1 </dev/null &
  echo $! >"$state/pids/ooda-operator"
fi
deadline=$((SECONDS + 60))
until curl -fsS "http://$operator_addr/readyz" 2>/dev/null | grep -q leader; do
  ((SECONDS < deadline)) || { log "operator not ready; see $logs/ooda-operator.log"; exit 1; }
  sleep 0.2
done

kubectl apply --server-side --field-manager ooda-demo -f examples/organisation.yaml
kubectl wait --for condition=Ready organisation/acme --timeout 60s
kubectl apply --server-side --field-manager ooda-demo -f examples/project.yaml
kubectl wait --for condition=Ready project/shop -n org-acme --timeout 60s
echo
kubectl get nodes -L topology.kubernetes.io/region
echo
kubectl get organisations
echo
kubectl get projects -A -o wide
echo
kubectl get statefulsets,pods,pvc,services,networkpolicies,secrets,leases,serviceaccounts -n org-acme -o wide
echo
echo "Operator: http://$operator_addr/metrics (log: $logs/ooda-operator.log)"
echo "Use the cluster: export KUBECONFIG=$kubeconfig   (kubectl: $k8s_bin/kubectl)"
echo "Try: kubectl patch project shop -n org-acme --type merge -p '{\"spec\":{\"lifecycle\":{\"state\":\"Stopped\"}}}'"
echo "Stop everything: make cluster-down"
