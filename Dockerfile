# eosproxy image: a static binary on a small base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/eosproxy ./cmd/eosproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/eosproxy /eosproxy
# Bootstrap listener, then one port per upstream broker.
EXPOSE 9092 9093 9094 9095
VOLUME /data
ENTRYPOINT ["/eosproxy", "--data-dir", "/data", "--log-format", "json"]
