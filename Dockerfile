# syntax=docker/dockerfile:1
# ferry: a static binary on a distroless base, running as a non-root user.
#
#   docker build -t ferry --build-arg VERSION=0.2.0 \
#       --build-arg COMMIT=$(git rev-parse HEAD) --build-arg BUILD_DATE=$(date -u +%FT%TZ) .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ferry .   # cross-builds, no emulation
#
#   docker run --rm -v ferry-spool:/var/lib/ferry/spool -v /var/log/app:/var/log/app:ro \
#       -v /etc/ferry:/etc/ferry:ro ferry ship --config /etc/ferry/ship.toml --metrics-addr :9464
#   docker run --rm -v ferry-state:/var/lib/ferry/state -p 7000:7000 \
#       -v /etc/ferry:/etc/ferry:ro ferry receive --config /etc/ferry/receive.toml --metrics-addr :9464
#
# The spool (shipper) and the state (receiver) must be volumes: they hold
# the records not yet delivered and the checkpoint. The health check asks
# ferry's /healthz on port 9464 (ferry health: distroless has no curl), so
# give the container --metrics-addr :9464 or metrics_addr = ":9464";
# without it the container reports unhealthy.

# The build runs on the builder's platform and cross-compiles (no cgo) for
# the target's: buildx sets TARGETOS and TARGETARCH.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Version, commit and build date, as ferry version prints them (an empty
# COMMIT or BUILD_DATE prints "unknown").
ARG VERSION=dev
ARG COMMIT=
ARG BUILD_DATE=
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH:-$(go env GOARCH)} go build -trimpath \
        -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildDate=${BUILD_DATE}" \
        -o /out/ferry ./cmd/ferry \
    && if [ "${TARGETOS}/${TARGETARCH:-$(go env GOARCH)}" = "$(go env GOHOSTOS)/$(go env GOHOSTARCH)" ]; then /out/ferry version; fi \
    && mkdir -p /out/var/lib/ferry/spool /out/var/lib/ferry/state

# distroless/static has CA certificates (S3 over TLS), tzdata (schedules) and
# the "nonroot" user (uid 65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=
ARG BUILD_DATE=
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Disaster-recovery replication by batched log shipping" \
      org.opencontainers.image.source="https://github.com/ferry-dr/ferry" \
      org.opencontainers.image.url="https://github.com/ferry-dr/ferry" \
      org.opencontainers.image.documentation="https://github.com/ferry-dr/ferry#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="ferry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/ferry /usr/local/bin/ferry
# The volume mount points, owned by nonroot so a fresh volume is writable
# (distroless has no shell to mkdir in).
COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry
COPY etc/ /etc/ferry/examples/
COPY LICENSE /usr/share/doc/ferry/LICENSE
USER nonroot:nonroot
VOLUME ["/var/lib/ferry/spool", "/var/lib/ferry/state"]
# 7000: a receiver's tcp:// link listener (--listen :7000); 9464: the
# metrics and health endpoint (--metrics-addr :9464).
EXPOSE 7000 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ferry", "health", "--addr", "127.0.0.1:9464", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["--help"]
