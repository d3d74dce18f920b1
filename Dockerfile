# eosproxy image: a static binary on a small base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/eosproxy ./cmd/eosproxy && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/eosproxy /eosproxy
# The state directory must belong to the image's non-root user, or a fresh
# named volume on /data would be root's and badger could not write.
COPY --from=build --chown=65532:65532 /out/data /data
# Bootstrap listener, then one port per upstream broker; then the admin
# endpoint (--admin-listen: metrics, health, pprof).
EXPOSE 9092 9093 9094 9095 9190
VOLUME /data
ENTRYPOINT ["/eosproxy", "--data-dir", "/data", "--log-format", "json"]
