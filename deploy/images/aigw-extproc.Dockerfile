# syntax=docker/dockerfile:1
# aigw-extproc: the external processor Envoy calls on every AI route.
# Static (musl) binary on distroless "static": no shell, no package manager, non-root
# (65532, the uid the generated Deployment runs as), and nothing written at run time, so the
# generated readOnlyRootFilesystem: true holds.
#
#   docker buildx build -f deploy/images/aigw-extproc.Dockerfile --platform linux/amd64,linux/arm64 .
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
    cargo build --release --locked -p aigw-extproc --target "$target"; \
    cp "target/$target/release/aigw-extproc" /aigw-extproc

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /aigw-extproc /usr/local/bin/aigw-extproc
USER 65532:65532
EXPOSE 1063 1064
ENTRYPOINT ["/usr/local/bin/aigw-extproc"]
