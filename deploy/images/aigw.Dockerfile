# syntax=docker/dockerfile:1
# aigw: the compiler, for CI jobs and as the Argo CD Config Management Plugin sidecar.
# Static (musl) binary on distroless "static", run as uid 999 (Argo CD's repo-server and plugin
# sidecars run as 999). It needs no network, no writable source folder and no shell: the
# plugin's generate command is `aigw build .`.
#
#   docker buildx build -f deploy/images/aigw.Dockerfile --platform linux/amd64,linux/arm64 .
FROM --platform=$BUILDPLATFORM rust:1.92-bookworm AS build
ARG TARGETARCH
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools gcc-aarch64-linux-gnu \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl; \
             export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
                    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc ;; \
      *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    rustup target add "$target"; \
    cargo build --release --locked -p aigw --target "$target"; \
    cp "target/$target/release/aigw" /aigw

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /aigw /usr/local/bin/aigw
USER 999:999
ENTRYPOINT ["/usr/local/bin/aigw"]
