#!/usr/bin/env bash
# `make demo`: the local control plane with its real node, the operator, the gateway and the
# examples: an organisation, a project cloned from a Git server and running its own dev server
# under gVisor, a sign-in, a request through the preview proxy, a shell in the sandbox, and a
# published site. Everything keeps running; `make cluster-down` stops it all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"

cargo build --locked
"$repo/scripts/cluster-up.sh"
kubectl apply --server-side --force-conflicts --field-manager ooda-bed -f crds/ >/dev/null
kubectl create namespace ooda-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Credentials of the local S3 that holds published sites (it takes any key).
kubectl create secret generic ooda-sites-s3 -n ooda-system --from-literal=accessKeyId=demo \
  --from-literal=secretAccessKey=demo-secret --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# The project's repository (examples/dev-server), served over HTTPS where the real node's pods
# may reach it; the operator's loader trusts the server's own authority.
git_port="${OODA_GIT_PORT:-24443}"
if ! alive ooda-demo-git; then
  rm -rf "$state/demo-git" && mkdir -p "$state/demo-git"
  cp -r examples/dev-server "$state/demo-git/work"
  git -C "$state/demo-git/work" init -q -b main
  git -C "$state/demo-git/work" add -A
  git -C "$state/demo-git/work" -c user.name=ooda -c user.email=demo@ooda.example commit -q -m "the shop"
  git clone -q --bare "$state/demo-git/work" "$state/demo-git/root/shop.git"
  setsid python3 scripts/git-server.py --address "$outside_ip" --port "$git_port" --root "$state/demo-git/root" \
    --tls-dir "$state/demo-git/tls" >"$logs/ooda-demo-git.log" 2>&1 </dev/null &
  echo $! >"$state/pids/ooda-demo-git"
fi
wait_for ooda-demo-git 30 grep -q https "$logs/ooda-demo-git.log"
config="$state/operator-config.yaml"
{ cat examples/operator-config.yaml; echo "gitCaBundle: |"; sed 's/^/  /' "$state/demo-git/tls/ca.crt"; } >"$config"

operator_addr="127.0.0.1:${OODA_OPERATOR_PORT:-18080}"
if ! alive ooda-operator; then
  log "starting the operator (log: $logs/ooda-operator.log)"
  KUBECONFIG="$kubeconfig" setsid "$CARGO_TARGET_DIR/debug/ooda" operator \
    --config "$config" --http-addr "$operator_addr" --namespace ooda-system \
    >"$logs/ooda-operator.log" 2>&1 </dev/null &
  echo $! >"$state/pids/ooda-operator"
fi
deadline=$((SECONDS + 60))
until curl -fsS "http://$operator_addr/readyz" 2>/dev/null | grep -q leader; do
  ((SECONDS < deadline)) || { log "operator not ready; see $logs/ooda-operator.log"; exit 1; }
  sleep 0.2
done

gateway_addr="127.0.0.1:${OODA_GATEWAY_PORT:-18443}"
gateway_health="127.0.0.1:${OODA_GATEWAY_HEALTH_PORT:-18081}"
if ! alive ooda-gateway; then
  log "starting the gateway (log: $logs/ooda-gateway.log)"
  KUBECONFIG="$kubeconfig" setsid "$CARGO_TARGET_DIR/debug/ooda" gateway \
    --config "$config" --listen "$gateway_addr" --http-addr "$gateway_health" \
    --namespace ooda-system --insecure-http --public-port "${gateway_addr##*:}" \
    >"$logs/ooda-gateway.log" 2>&1 </dev/null &
  echo $! >"$state/pids/ooda-gateway"
fi
deadline=$((SECONDS + 60))
until curl -fsS "http://$gateway_health/readyz" 2>/dev/null | grep -q ready; do
  ((SECONDS < deadline)) || { log "gateway not ready; see $logs/ooda-gateway.log"; exit 1; }
  sleep 0.2
done

kubectl apply --server-side --field-manager ooda-demo -f examples/organisation.yaml
kubectl wait --for condition=Ready organisation/acme --timeout 60s
kubectl apply --server-side --field-manager ooda-demo -f examples/project.yaml
kubectl wait --for condition=Ready project/shop -n org-acme --timeout 180s
echo
kubectl get nodes -L topology.kubernetes.io/region -o wide
echo
kubectl get organisations
echo
kubectl get projects -A -o wide
echo
kubectl get statefulsets,pods,pvc,services,networkpolicies,secrets,leases,serviceaccounts -n org-acme -o wide
echo

# Alice signs in (her password is made up here, once) and previews the project.
password_file="$state/alice.password"
if [[ ! -s "$password_file" ]]; then
  openssl rand -base64 18 >"$password_file"
  KUBECONFIG="$kubeconfig" "$CARGO_TARGET_DIR/debug/ooda" user add --email alice@acme.example \
    --password-stdin --namespace ooda-system <"$password_file"
fi
# `ooda login` derives the auth key from the password here; the gateway never sees the password.
session=$("$CARGO_TARGET_DIR/debug/ooda" login --gateway "http://$gateway_addr" --email alice@acme.example \
  --password-stdin <"$password_file")
echo "Signed in as alice; her projects through the API:"
curl -fsS "http://$gateway_addr/api/orgs/acme/projects" -H "authorization: Bearer $session" |
  jq -c '.projects[] | {name, phase, ready, previewHost}'
preview=$(curl -fsS "http://$gateway_addr/api/orgs/acme/projects/shop/preview" -H "authorization: Bearer $session")
host=$(jq -r .host <<<"$preview")
token=$(jq -r .token <<<"$preview")

echo
echo "Through the preview proxy ($host → the dev server in shop-0):"
curl -sS --resolve "$host:${gateway_addr##*:}:127.0.0.1" -H "x-ooda-preview-token: $token" \
  "http://$host:${gateway_addr##*:}/" | grep -o '<p>.*</p>'
echo
echo "A shell in the sandbox (kubectl exec, the terminal's path): uname -r, id"
kubectl exec shop-0 -n org-acme -c workspace -- sh -c 'uname -r; id'

# Publishing: the example site as a tar.gz, a new version in the EU bucket, served at once.
published=$(tar -C examples/site -czf - . |
  curl -fsS "http://$gateway_addr/api/orgs/acme/projects/shop/publish" -H "authorization: Bearer $session" \
    -H "content-type: application/gzip" --data-binary @-)
site_host="shop--acme.sites.ooda.localhost"
echo
echo "Published version $(jq -r .version <<<"$published") of examples/site ($(jq -r .files <<<"$published") files):"
curl -sS --resolve "$site_host:${gateway_addr##*:}:127.0.0.1" "http://$site_host:${gateway_addr##*:}/" | head -4
echo "Site in a browser: $(jq -r .url <<<"$published")"
echo
echo "Dashboard: http://ooda.localhost:${gateway_addr##*:}/  sign in as alice@acme.example, password: $(cat "$password_file")"
echo "Gateway API: http://$gateway_addr/api/openapi.json (log: $logs/ooda-gateway.log)"
echo "Preview in a browser: $(jq -r .url <<<"$preview")  (resolve *.localhost to 127.0.0.1)"
echo "Operator: http://$operator_addr/metrics (log: $logs/ooda-operator.log)"
echo "Use the cluster: export KUBECONFIG=$kubeconfig   (kubectl: $k8s_bin/kubectl)"
echo "Try: kubectl patch project shop -n org-acme --type merge -p '{\"spec\":{\"lifecycle\":{\"state\":\"Stopped\"}}}'"
echo "Stop everything: make cluster-down"
