# syntax=docker/dockerfile:1
# lgtm-agent: one static-ish Rust binary on distroless (glibc, CA certificates, no shell).
#   docker build -t lgtm-agent:dev .

FROM rust:1-bookworm AS builder
WORKDIR /src
# No protoc: no crate of the workspace has a build script (the protobuf types come generated
# in opentelemetry-proto and our own prost structs).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p lgtm-agent \
 && install -D -m 0755 target/release/lgtm-agent /out/lgtm-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/lgtm-agent /usr/local/bin/lgtm-agent
# 65532 (nonroot). The DaemonSet overrides it with root to read root-owned pod logs (see the chart's README).
USER 65532:65532
EXPOSE 4317 4318 9464
ENTRYPOINT ["/usr/local/bin/lgtm-agent"]
CMD ["run", "--config", "/etc/lgtm-agent/config/config.yaml"]
