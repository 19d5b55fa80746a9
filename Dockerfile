# The ooda image: the `ooda` binary, the C runtime it links (glibc, libgcc_s), CA certificates and a
# non-root user. Nothing else: no shell, no package manager.
#
# The context is a staged root filesystem, not the source tree:
#   scripts/build-image.sh --context-only     # writes the context and prints its path
#   docker build --build-arg VERSION=… --build-arg REVISION=… -t ooda:dev <that path>
# `make image` builds this very file with buildah (no Docker daemon, no registry).
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/ooda-run/ooda
LABEL org.opencontainers.image.title="ooda" \
      org.opencontainers.image.description="Sandboxed, hibernating cloud development environments on Kubernetes" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# A fixed UID and GID, matching /etc/passwd: runAsNonRoot can check it without a name lookup.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ooda"]
