#!/usr/bin/env bash
# `make kind-node`: what a kind cluster needs on a machine with no registry, built from the Go
# module proxy and Debian's packages at the versions in scripts/versions.env, cached by version:
#   $OODA_CACHE/kind/kubernetes-<v>/{kubeadm,kube-proxy}   (next to the bed's own binaries)
#   $OODA_CACHE/kind/coredns-<v>/coredns
#   $OODA_CACHE/kind/node-<kubernetes v>-<key>.tar   the node image `ooda.local/kind-node:<v>`, a
#     docker-archive for `docker load`: Debian (mmdebstrap) with kind's base files, containerd,
#     kubelet, kubeadm, kubectl, runc, the CNI plugins, a static CNI configuration for one node,
#     NetworkPolicy by kube-network-policies (scripts/kind/network-policies.yaml), kind's
#     local-path StorageClass, and the images kubeadm asks for preloaded, built here around the
#     same binaries (the control plane, etcd, CoreDNS, kube-proxy, pause; local-path-provisioner
#     with its helper; kube-network-policies)
# `kind build node-image` cannot be used: it fetches etcd, CoreDNS, pause and kindnetd from a registry.
# gVisor is not in the image: scripts/e2e-kind.sh mounts it into any node image, stock ones too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"
# shellcheck source=images.sh
source "$here/images.sh"
mkdir -p "$kind_cache"
# The bed's binaries the node reuses: the control plane's, kubelet, containerd, kube-network-policies.
"$here/build-control-plane.sh"
"$here/build-real-node.sh"

build_node_binaries() {
  local v="$KUBERNETES_VERSION" out="$kind_cache/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.complete" ]] && return 0
  log "building kubeadm and kube-proxy $v"
  local work; work="$(mktemp -d)"
  kubernetes_wrapper "$work" "$v" k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy
  go_program "$work" "$out" "$(kubernetes_ldflags "$v")" kubeadm=k8s.io/kubernetes/cmd/kubeadm \
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
  finish "$out"
  rm -rf "$work"
}
build_node_binaries

build_module "$kind_cache/coredns-$COREDNS_VERSION" github.com/coredns/coredns "$COREDNS_VERSION" \
  "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" coredns=github.com/coredns/coredns

# --- the node image ---
node_key="$(cat "$here/build-kind-node.sh" "$here/images.sh" "$here/versions.env" "$here/realnode/pause.c" \
  "$here/realnode/oci-archive.py" "$here/kind/network-policies.yaml" | sha256sum | cut -c1-12)"
node_archive="$kind_cache/node-$KUBERNETES_VERSION-$node_key.tar"
if [[ -f "$node_archive" ]]; then
  log "kind node image ready: $node_archive"
  exit 0
fi
export SOURCE_DATE_EPOCH=1767225600 # 2026-01-01
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# image NAME DIR CONFIG: a docker-archive of DIR as one layer, into $work/images/.
image() {
  mkdir -p "$work/images"
  tar_of "$work/layer.tar" "$2"
  "$here/realnode/oci-archive.py" "$work/images/$(echo "$1" | tr '/:' '__').tar" "$1" "$work/layer.tar" "$3"
  rm -f "$work/layer.tar"
}
k8s_node="$kind_cache/kubernetes-$KUBERNETES_VERSION"
images_list="$("$k8s_node/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION")"
image_named() { grep -m1 "/$1:" <<<"$images_list"; }
path_env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

log "building the images kubeadm $KUBERNETES_VERSION asks for"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  mkdir -p "$work/$component/usr/local/bin"
  cp "$k8s_bin/$component" "$work/$component/usr/local/bin/"
  image "$(image_named "$component")" "$work/$component" "{$path_env}"
done
mkdir -p "$work/etcd/usr/local/bin"
cp "$etcd_bin/etcd" "$work/etcd/usr/local/bin/"
image "$(image_named etcd)" "$work/etcd" "{$path_env}"
mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$here/realnode/pause.c"
image "$(image_named pause)" "$work/pause" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
mkdir -p "$work/coredns"
cp "$kind_cache/coredns-$COREDNS_VERSION/coredns" "$work/coredns/"
image "$(image_named coredns)" "$work/coredns" '{"Entrypoint":["/coredns"],"User":"65532:65532"}'
# kube-proxy programs iptables: Debian's iptables, nftables and conntrack beside it.
mmdebstrap --quiet --variant=minbase --include=iptables,nftables,conntrack,ipset \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="install -m 0755 '$k8s_node/kube-proxy' \"\$1/usr/local/bin/kube-proxy\"" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  bookworm "$work/kube-proxy"
image "$(image_named kube-proxy)" "$work/kube-proxy" "{$path_env}"

# kind's default StorageClass `standard`, as its own node images ship it: local-path-provisioner
# (the bed's build) under kind's manifest and image names. Its helper makes each volume's
# directory (`mkdir -m 0777`, so the project's non-root user can write its workspace) and needs
# a shell: Debian's, from kube-proxy's base.
kind_module="$(cd "$work" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
storage_images="$(python3 - "$kind_module/pkg/build/nodeimage/const_storage.go" "$work/default-storage.yaml" <<'PY'
import re, sys
source = open(sys.argv[1]).read()
names = dict(re.findall(r'const (storage\w+Image) = "([^"]+)"', source))
for name, ref in names.items():
    source = source.replace("` + " + name + " + `", ref)
manifest = re.search(r'const defaultStorageManifest = `(.*?)`\n', source, re.S).group(1)
open(sys.argv[2], "w").write(manifest)
print(names["storageProvisionerImage"], names["storageHelperImage"])
PY
)"
read -r provisioner_image helper_image <<<"$storage_images"
mkdir -p "$work/local-path/usr/local/bin"
cp "$realnode_bin/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION/local-path-provisioner" "$work/local-path/usr/local/bin/"
image "$provisioner_image" "$work/local-path" "{$path_env}"
rm "$work/kube-proxy/usr/local/bin/kube-proxy"
image "$helper_image" "$work/kube-proxy" "{$path_env}"
# NetworkPolicy: kube-network-policies, with iptables and nftables for its init container's rules.
knp_image="ooda.local/kube-network-policies:$KUBE_NETWORK_POLICIES_VERSION"
install -m 0755 "$realnode_bin/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION/kube-network-policies" \
  "$work/kube-proxy/usr/local/bin/"
image "$knp_image" "$work/kube-proxy" "{$path_env}"

log "building the node's root filesystem (mmdebstrap, kind $KIND_VERSION's base files)"
rootfs="$work/rootfs"
kind_base="$kind_module/images/base/files"
mmdebstrap --quiet --variant=minbase \
  --include=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,procps,socat,runc,containernetworking-plugins,jq,curl \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$rootfs"
# What kind's images/base/Dockerfile does, without a Docker build.
install -m 0755 "$kind_base"/usr/local/bin/* "$rootfs/usr/local/bin/"
mkdir -p "$rootfs/kind/bin" "$rootfs/kind/manifests" "$rootfs/etc/kubernetes/manifests" "$rootfs/opt/cni/bin" "$rootfs/etc/cni/net.d"
install -m 0644 "$work/default-storage.yaml" "$rootfs/kind/manifests/default-storage.yaml"
sed "s#KUBE_NETWORK_POLICIES_IMAGE#$knp_image#" "$here/kind/network-policies.yaml" >"$rootfs/kind/manifests/default-cni.yaml"
install -m 0644 "$kind_base/kind/README.txt" "$rootfs/kind/"
install -m 0755 "$kind_base"/kind/bin/* "$rootfs/kind/bin/"
install -m 0644 "$kind_base/etc/crictl.yaml" "$rootfs/etc/"
install -D -m 0644 "$kind_base/etc/containerd/config.toml" "$rootfs/etc/containerd/config.toml"
install -m 0644 "$kind_base"/etc/default/* "$rootfs/etc/default/"
install -m 0644 "$kind_base"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
install -m 0644 "$kind_base"/etc/systemd/system/*.service "$kind_base"/etc/systemd/system/*.slice "$rootfs/etc/systemd/system/"
mkdir -p "$rootfs/etc/systemd/system/kubelet.service.d"
install -m 0644 "$kind_base"/etc/systemd/system/kubelet.service.d/* "$rootfs/etc/systemd/system/kubelet.service.d/"
find "$rootfs/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/* "$rootfs"/etc/systemd/system/*.wants/* \
  "$rootfs"/lib/systemd/system/local-fs.target.wants/* "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* "$rootfs"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
chroot "$rootfs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
chroot "$rootfs" systemctl mask systemd-binfmt.service >/dev/null 2>&1
# The binaries: the bed's own, built from source (kind build node-image adds the same three).
install -m 0755 "$containerd_bin"/{containerd,ctr,containerd-shim-runc-v2} "$rootfs/usr/local/bin/"
install -m 0755 "$k8s_node/kubeadm" "$realnode_bin/kubelet-$KUBERNETES_VERSION/kubelet" "$k8s_bin/kubectl" "$rootfs/usr/bin/"
echo "$KUBERNETES_VERSION" >"$rootfs/kind/version"
for plugin in host-local loopback ptp portmap bridge; do cp "$rootfs/usr/lib/cni/$plugin" "$rootfs/opt/cni/bin/"; done
"$containerd_bin/ctr" oci spec |
  jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
  jq 'del(.process.rlimits)' >"$rootfs/etc/containerd/cri-base.json"
# kind's containerd configuration, with kubeadm's pause and no OOM score changes the host refuses.
sed -i -e "s#sandbox_image = .*#sandbox_image = \"$(image_named pause)\"#" \
  -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$rootfs/etc/containerd/config.toml"
# One node, one pod range; routes only inside the kind network's 198.18.128.0/17.
cat >"$rootfs/etc/cni/net.d/10-ooda.conflist" <<'JSON'
{"cniVersion":"0.4.0","name":"ooda-kind","plugins":[
 {"type":"ptp","ipMasq":false,"mtu":1500,"ipam":{"type":"host-local","dataDir":"/run/cni-ipam-state",
  "routes":[{"dst":"198.18.128.0/17"}],"ranges":[[{"subnet":"198.18.160.0/24"}]]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}
JSON

log "preloading the images into the node's containerd"
mkdir -p "$work/state" "$rootfs/var/lib/containerd"
cat >"$work/containerd.toml" <<TOML
version = 3
root = "$rootfs/var/lib/containerd"
state = "$work/state"
[grpc]
  address = "$work/state/containerd.sock"
TOML
"$containerd_bin/containerd" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
preload=$!
preload_ctr() { "$containerd_bin/ctr" --address "$work/state/containerd.sock" --namespace k8s.io "$@"; }
for _ in $(seq 100); do preload_ctr version >/dev/null 2>&1 && break; sleep 0.1; done
for archive in "$work"/images/*.tar; do
  preload_ctr images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests "$archive" >/dev/null
done
kill "$preload" && wait "$preload" || true
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*

log "writing the node image"
tar_of "$work/node.layer.tar" "$rootfs"
"$here/realnode/oci-archive.py" "$node_archive.tmp" "ooda.local/kind-node:$KUBERNETES_VERSION" "$work/node.layer.tar" \
  '{"Entrypoint":["/usr/local/bin/entrypoint","/sbin/init"],"Env":["container=docker"],"StopSignal":"SIGRTMIN+3"}'
rm -f "$kind_cache"/node-"$KUBERNETES_VERSION"-*.tar
mv "$node_archive.tmp" "$node_archive"
log "kind node image ready: $node_archive ($(du -h "$node_archive" | cut -f1))"
