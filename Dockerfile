# syntax=docker/dockerfile:1
# Build: a static binary (CGO off), the same flags scripts/build.sh uses.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sipwake ./cmd/sipwake

# Run: no shell, non-root, the database on a volume.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sipwake /usr/local/bin/sipwake
COPY configs/sipwake.yaml /etc/sipwake/sipwake.yaml
ENV SIPWAKE_STORE_DATA_DIR=/var/lib/sipwake \
    SIPWAKE_SIP_LISTEN_UDP=0.0.0.0:5060 \
    SIPWAKE_SIP_LISTEN_TCP=0.0.0.0:5060
VOLUME ["/var/lib/sipwake"]
EXPOSE 5060/udp 5060/tcp 5061/tcp
USER nonroot:nonroot
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/sipwake", "config", "check", "-config", "/etc/sipwake/sipwake.yaml"]
ENTRYPOINT ["/usr/local/bin/sipwake", "-config", "/etc/sipwake/sipwake.yaml"]
