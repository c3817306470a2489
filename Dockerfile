# syntax=docker/dockerfile:1
#
# Sluice: one image with every binary (nsqd, nsqlookupd, nsqadmin, sluice).
#
#   docker build -t sluice .
#   docker run -p 4150-4152:4150-4152 -v sluice-data:/data sluice          # nsqd (default)
#   docker run -p 4160-4161:4160-4161 sluice nsqlookupd                     # nsqlookupd
#   docker run -p 4171:4171 sluice nsqadmin --lookupd-http-address=HOST:4161 # nsqadmin
#
# Flags and config keys are NSQ's; add --config=/etc/sluice/<daemon>.toml with a
# mounted file (examples in deploy/). deploy/README.md has the details;
# deploy/dockerfile_test.go builds and runs what this file builds and runs.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so source edits do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/bin/ ./apps/...
# The volume's mount point, owned by the runtime user (distroless "nonroot", 65532).
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME /data
# nsqd TCP, HTTP, HTTPS; nsqlookupd TCP, HTTP; nsqadmin HTTP.
EXPOSE 4150 4151 4152 4160 4161 4171
# No ENTRYPOINT: the first argument picks the binary (PATH has /usr/local/bin).
CMD ["nsqd", "--data-path=/data"]
