# orch in a container: `docker compose up` runs `orch serve` against MinIO
# (see docker-compose.yml); `docker build -t orch .` builds the image alone.

# Build: a static binary (no cgo).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/orch ./cmd/orchestrator

# Run: Debian slim has the sh and awk the example pipelines' exec stages
# use; CA certificates for an S3 over HTTPS. orch runs as an unprivileged
# user that owns only the workspace's state directory.
FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --uid 10001 --user-group --no-create-home --home-dir /work orch
COPY --from=build /out/orch /usr/local/bin/orch
WORKDIR /work
COPY pipelines ./pipelines
RUN mkdir -p /work/.orch /work/models && chown orch:orch /work/.orch /work/models
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["orch"]
CMD ["serve", "pipelines/"]
