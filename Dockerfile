# ferry: a static binary on a distroless base, running as a non-root user.
#
#   docker build -t ferry .
#   docker run --rm -v ferry-spool:/var/lib/ferry/spool -v /var/log/app:/var/log/app:ro \
#       -v /etc/ferry:/etc/ferry:ro ferry ship --config /etc/ferry/ship.toml
#   docker run --rm -v ferry-state:/var/lib/ferry/state -p 7000:7000 \
#       -v /etc/ferry:/etc/ferry:ro ferry receive --config /etc/ferry/receive.toml
#
# The spool (shipper) and the state (receiver) must be volumes: they hold
# the records not yet delivered and the checkpoint.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), reproducible paths, version from the build argument.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ferry ./cmd/ferry \
    && /out/ferry version \
    && mkdir -p /out/var/lib/ferry/spool /out/var/lib/ferry/state

# distroless/static has CA certificates (S3 over TLS), tzdata (schedules) and
# the "nonroot" user (uid 65532), and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ferry /usr/local/bin/ferry
# The volume mount points, owned by nonroot so a fresh volume is writable
# (distroless has no shell to mkdir in).
COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry
COPY etc/ /etc/ferry/examples/
USER nonroot:nonroot
VOLUME ["/var/lib/ferry/spool", "/var/lib/ferry/state"]
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["--help"]
