#!/usr/bin/env bash
# `make e2e`: installs ooda with its chart, as a platform team would, and runs the e2e suite
# (tests/e2e) against the release through its public surfaces only.
#
# On the bed (the default): brings it up if it is not running (and down afterwards), builds and
# loads the image (`make image`), installs with examples/helm/minimal.yaml plus
# tests/e2e/values-bed.yaml, and hands the suite the gateway Service's endpoint.
# Elsewhere (scripts/e2e-kind.sh): OODA_E2E_KUBECONFIG, OODA_E2E_VALUES (an extra values file),
# OODA_E2E_SET (one more --set) and OODA_E2E_GATEWAY (host:port where the suite reaches the
# gateway's Service) name the cluster.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
cd "$repo"

namespace=ooda-system
release=ooda
work="$bed_dir/e2e"
rm -rf "$work" && mkdir -p "$work"
"$here/build-tools.sh"
helm() { "$helm_dir/helm" --kubeconfig "$e2e_kubeconfig" "$@"; }
k() { "$k8s_bin/kubectl" --kubeconfig "$e2e_kubeconfig" "$@"; }

e2e_kubeconfig="${OODA_E2E_KUBECONFIG:-$kubeconfig}"
extra_values=()
if [[ -z "${OODA_E2E_KUBECONFIG:-}" ]]; then
  if ! kubectl get --raw /readyz >/dev/null 2>&1; then
    "$here/cluster-up.sh"
    [[ "${OODA_KEEP_CLUSTER:-0}" == 1 ]] || trap '"$here/cluster-down.sh"' EXIT
  fi
  "$here/build-image.sh"
  # Where the bed's pods reach the API server and S3 (the relays of real-node-up.sh).
  extra_values=(-f tests/e2e/values-bed.yaml --set "image.tag=$ooda_version"
    --set "apiServer.host=$outside_ip" --set "apiServer.port=$apiserver_port"
    --set "config.jurisdictions.eu.sites.endpoint=http://$outside_ip:$s3_port")
else
  extra_values=(-f "${OODA_E2E_VALUES:?the values file of that cluster}")
  [[ -n "${OODA_E2E_SET:-}" ]] && extra_values+=(--set "$OODA_E2E_SET")
fi

if k get namespace "$namespace" >/dev/null 2>&1; then
  log "$namespace exists: ooda is installed there already; run the suite on a fresh cluster (make cluster-down)"
  exit 1
fi

# --- what the README's "Install on a cluster" has the installer do first ---
k create namespace "$namespace"
k label namespace "$namespace" pod-security.kubernetes.io/enforce=restricted
k -n "$namespace" create secret generic ooda-sites-s3 \
  --from-literal=accessKeyId=e2e-access-key --from-literal=secretAccessKey=e2e-secret-key
# The gateway's certificate, from a CA of the run's own, for the API host and the wildcards.
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=ooda-e2e-ca" -keyout "$work/ca.key" -out "$work/ca.crt"
openssl_quiet req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=ooda.e2e.localhost" \
  -addext "subjectAltName=DNS:ooda.e2e.localhost,DNS:*.preview.e2e.localhost,DNS:*.sites.e2e.localhost" \
  -keyout "$work/tls.key" -out "$work/tls.csr"
openssl_quiet x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -copy_extensions copyall -out "$work/tls.crt"
k -n "$namespace" create secret tls ooda-gateway-tls --cert "$work/tls.crt" --key "$work/tls.key"
# CRDs applied before, by hand or by the bed: the release adopts them (chart README, "CRDs").
for crd in organisations.ooda.run projects.ooda.run; do
  if k get crd "$crd" >/dev/null 2>&1; then
    k label crd "$crd" app.kubernetes.io/managed-by=Helm --overwrite
    k annotate crd "$crd" meta.helm.sh/release-name="$release" meta.helm.sh/release-namespace="$namespace" --overwrite
  fi
done

log "helm install $release"
started=$SECONDS
helm install "$release" charts/ooda --namespace "$namespace" -f examples/helm/minimal.yaml "${extra_values[@]}" \
  --wait --timeout 5m
log "installed and rolled out in $((SECONDS - started))s"
helm get values "$release" --namespace "$namespace" --all -o yaml >"$work/values.yaml"

gateway="${OODA_E2E_GATEWAY:-}"
if [[ -z "$gateway" ]]; then
  # No kube-proxy in the bed: the suite reaches the Service at one of its endpoints.
  gateway="$(k -n "$namespace" get endpointslices -l kubernetes.io/service-name=ooda-gateway \
    -o jsonpath='{.items[0].endpoints[0].addresses[0]}'):$(k -n "$namespace" get endpointslices \
    -l kubernetes.io/service-name=ooda-gateway -o jsonpath='{.items[0].ports[?(@.name=="https")].port}')"
fi
log "the suite reaches the gateway at $gateway"
OODA_E2E_KUBECONFIG="$e2e_kubeconfig" OODA_E2E_GATEWAY="$gateway" OODA_E2E_CA="$work/ca.crt" \
  OODA_KUBECTL="$k8s_bin/kubectl" OODA_HELM="$helm_dir/helm" OODA_E2E_RELEASE="$release" \
  OODA_E2E_NAMESPACE="$namespace" cargo test --locked --test e2e -- --nocapture
