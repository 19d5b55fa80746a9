#!/usr/bin/env bash
# Brings up a real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC, Pod Security
# Admission), kube-controller-manager, kube-scheduler and kwok with simulated nodes in three
# regions, plus one real node running runc and gVisor pods (scripts/real-node-up.sh).
# Idempotent: a healthy running cluster is left alone. Writes .local/kubeconfig.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$repo/scripts/build-control-plane.sh"

if [[ -f "$kubeconfig" ]]; then
  all_alive=true
  expected=("${components[@]}")
  [[ "${OODA_REAL_NODE:-1}" == 1 ]] && expected+=("${real_node_components[@]}")
  for c in "${expected[@]}"; do alive "$c" || all_alive=false; done
  if $all_alive && kubectl get --raw /readyz >/dev/null 2>&1; then
    log "already running (kubeconfig: $kubeconfig)"
    exit 0
  fi
  log "a previous cluster is partly running; replacing it"
fi
"$repo/scripts/cluster-down.sh" 2>/dev/null

started_at=$(date +%s.%N)
mkdir -p "$pki" "$state/pids" "$state/etcd" "$logs"

# --- PKI: one CA; P-256 keys (fast to make); client identities the bootstrap RBAC knows. ---
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=ooda-local-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt"
# The outside address too: the real node's pods reach the API server there (real-node-up.sh).
issue apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:$outside_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue admin "/O=system:masters/CN=ooda-admin"
issue controller-manager "/CN=system:kube-controller-manager"
issue scheduler "/CN=system:kube-scheduler"
issue kwok "/O=system:masters/CN=kwok"
# kwok's kubelet API (exec, logs), which the API server reaches with the CA above.
issue kwok-serving "/CN=kwok-kubelet" "IP:127.0.0.1"
# How the API server proves itself to kubelets (logs, exec, port-forward); bed/kubelet-api.yaml
# lets it, and only it, use their API.
issue apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"
openssl_quiet ecparam -name prime256v1 -genkey -noout -out "$pki/service-account.key"
openssl_quiet ec -in "$pki/service-account.key" -pubout -out "$pki/service-account.pub"

for id in controller-manager scheduler kwok; do write_kubeconfig "$state/$id.kubeconfig" "$id"; done


# --- etcd ---
start etcd "$etcd_bin/etcd" --name ooda --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "ooda=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver ---
start kube-apiserver "$k8s_bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer "$server" --api-audiences "$server" \
  --service-account-key-file "$pki/service-account.pub" \
  --service-account-signing-key-file "$pki/service-account.key" \
  --service-cluster-ip-range "${OODA_SERVICE_CIDR:-10.96.0.0/16}" \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --endpoint-reconciler-type none \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --profiling=false
wait_for kube-apiserver 60 https_ok "$server/readyz"
write_kubeconfig "$kubeconfig" admin

# ooda's CRDs go in before the controller manager starts, so its quota controller can count
# projects from the first moment (it discovers resources added later only every 30s).
kubectl apply --server-side --force-conflicts --field-manager ooda-bed -f "$repo/crds/" >/dev/null

# --- kube-controller-manager and kube-scheduler, each with its own identity ---
start kube-controller-manager "$k8s_bin/kube-controller-manager" \
  --kubeconfig "$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$controller_manager_port" --cert-dir "$state/controller-manager" \
  --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file "$pki/service-account.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --enable-hostpath-provisioner=true \
  --kube-api-qps "$controller_manager_qps" --kube-api-burst "$((controller_manager_qps * 3 / 2))" \
  --profiling=false
start kube-scheduler "$k8s_bin/kube-scheduler" \
  --kubeconfig "$state/scheduler.kubeconfig" \
  --authentication-kubeconfig "$state/scheduler.kubeconfig" \
  --authorization-kubeconfig "$state/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$scheduler_port" --cert-dir "$state/scheduler" \
  --leader-elect=false --profiling=false

# --- kwok: simulated kubelets, for its own nodes only (annotated kwok.x-k8s.io/node: fake, see
# bed/nodes.yaml); pods get addresses from 127.1.0.0/16 (loopback) ---
stages="$state/kwok-stages.yaml"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  cat "$kwok_dir/stages/$f"; echo "---"
done >"$stages"
# `kubectl exec` into a simulated pod's workspace container runs the command on this host, as
# nobody, in a scratch folder: what terminals are tested against (a real node runs them for real).
mkdir -p "$state/kwok-exec" && chown nobody: "$state/kwok-exec"
cat >>"$stages" <<YAML
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata: { name: ooda-workspaces }
spec:
  execs:
  - containers: [workspace]
    local:
      workDir: $state/kwok-exec
      envs: [{ name: HOME, value: $state/kwok-exec }, { name: PATH, value: /usr/bin:/bin }]
      securityContext: { runAsUser: 65534, runAsGroup: 65534 }
YAML
start kwok "$kwok_dir/kwok" --kubeconfig "$state/kwok.kubeconfig" --config "$stages" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --node-ip 127.0.0.1 --cidr 127.1.0.0/16 --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" \
  --tls-cert-file "$pki/kwok-serving.crt" --tls-private-key-file "$pki/kwok-serving.key"

wait_for kube-controller-manager 60 curl -fsSk --max-time 2 "https://127.0.0.1:$controller_manager_port/healthz"
wait_for kube-scheduler 60 curl -fsSk --max-time 2 "https://127.0.0.1:$scheduler_port/healthz"

# --- the bed's fixtures: nodes in three regions, RuntimeClasses, a hostPath StorageClass ---
kubectl apply -f "$repo/scripts/bed/" >/dev/null
kubectl wait --for=condition=Ready node --all --timeout=60s >/dev/null
# The service-account controller creating `default` proves the controller manager is working.
wait_for kube-controller-manager 60 kubectl get serviceaccount default -n default

# --- a local S3 API (moto) for published sites, with one bucket per jurisdiction ---
if [[ ! -x "$moto_dir/bin/moto_server" ]]; then
  log "installing moto $MOTO_VERSION into $moto_dir"
  rm -rf "$moto_dir"
  python3 -m venv "$moto_dir"
  "$moto_dir/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
start s3 "$moto_dir/bin/moto_server" -H 127.0.0.1 -p "$s3_port"
wait_for s3 60 curl -fsS --max-time 2 "http://127.0.0.1:$s3_port/moto-api/"
for bucket in "${s3_buckets[@]}"; do
  curl -fsS -X PUT "http://127.0.0.1:$s3_port/$bucket" >/dev/null
done

# --- the real node: runc and gVisor pods on a bridge, NetworkPolicy enforced ---
if [[ "${OODA_REAL_NODE:-1}" == 1 ]]; then
  "$repo/scripts/real-node-up.sh"
else
  log "OODA_REAL_NODE=0: no real node; every pod is simulated"
fi

log "ready in $(awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s; kubeconfig: $kubeconfig"
