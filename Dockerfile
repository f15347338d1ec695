# swarmgen node image.
#
#   docker build -t swarmgen:latest .          (or: make docker-image)
#   docker run -d --name swarmgen -p 4001:4001/tcp -p 4001:4001/udp \
#     -p 127.0.0.1:5080:5080 -v swarmgen-data:/data swarmgen:latest
#
# The binary is static (CGO_ENABLED=0): no libc, so the NVML GPU probe is
# compiled out and the node lists GPUs with nvidia-smi instead when one is on
# PATH (node/gpu_nocgo.go, node/gpu_smi.go). The image holds no Python, so it
# offers the process apps (noop, fractal) and, with the host's docker socket,
# the docker executor; see docs/operator-guide.md#running-in-docker.

ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=mod
# Dependencies first, so code edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags "-s -w" -o /out/swarmgen ./cmd/swarmgen \
 && /out/swarmgen --version \
 && mkdir -p /out/data

FROM ${BASE_IMAGE}
# distroless/static ships CA certificates (for dataSource "url" over https),
# /etc/passwd with the nonroot user (65532) and tzdata; nothing else.
COPY --from=build /out/swarmgen /usr/local/bin/swarmgen
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# The API must listen on the container's interface to be published; publish
# it on the host's loopback only (-p 127.0.0.1:5080:5080): it has no
# authentication. The gateway stays off unless SWARMGEN_GATEWAY is set.
ENV HOME=/home/nonroot \
    SWARMGEN_API=0.0.0.0:5080 \
    SWARMGEN_DATA_DIR=/data
EXPOSE 4001/tcp 4001/udp 5080 8080
VOLUME /data
ENTRYPOINT ["swarmgen", "node", "run", "--data-dir", "/data"]
