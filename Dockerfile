# syntax=docker/dockerfile:1
#
#   docker build -t sipwake .
#   docker run -d --name sipwake -v sipwake-data:/var/lib/sipwake \
#     -p 5060:5060/udp -p 5060:5060/tcp -p 5061:5061/tcp -p 8443:8443/tcp \
#     -e SIPWAKE_SIP_UPSTREAM=sip:registrar.example.com \
#     -e SIPWAKE_SEAL_KEY_FILE=/run/secrets/sipwake-seal \
#     sipwake
#
# Build: a static binary (CGO off). cmd/sipwake's TestShippedBinary builds
# with exactly these flags and runs it with the shipped config; keep the two
# in step (goBuildFlags in cmd/sipwake/container_test.go).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# `sipwake version` says what was built:
#   docker build --build-arg VERSION=1.2.0 --build-arg COMMIT=$(git rev-parse HEAD) -t sipwake .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/sipwake ./cmd/sipwake
# The volume's mount point, owned by the runtime user (distroless has no
# shell to mkdir/chown at run time); a new named volume inherits it.
RUN mkdir -p /out/var/lib/sipwake

# Run: no shell, no libc, non-root (uid 65532), the database on a volume.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sipwake /usr/local/bin/sipwake
COPY configs/sipwake.yaml /etc/sipwake/sipwake.yaml
COPY --from=build --chown=65532:65532 --chmod=0700 /out/var/lib/sipwake /var/lib/sipwake
VOLUME ["/var/lib/sipwake"]
# SIP over UDP and TCP, SIP over TLS (sip.listen.tls), the handover API
# (api.listen), the admin/metrics listener (admin.listen: loopback unless
# TLS files are configured, see configs/sipwake.yaml).
EXPOSE 5060/udp 5060/tcp 5061/tcp 8443/tcp 9060/tcp
USER 65532:65532
# distroless has no curl: the binary probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sipwake", "healthcheck", "-config", "/etc/sipwake/sipwake.yaml"]
# docker stop sends SIGTERM: sipwake drains (shutdown.drain_timeout, 20s)
# and exits 0. Docker's default grace is 10s: use `docker stop -t 30` (or
# stop_grace_period: 30s in compose) so the drain is not cut by SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sipwake", "-config", "/etc/sipwake/sipwake.yaml"]
