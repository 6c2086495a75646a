# Herald images for a Docker/BuildKit engine: `docker build --target server -t herald-server .`
# and `--target operator`. Without an engine, scripts/images builds the same images with buildah.
# Runtime: distroless cc (glibc, libgcc, CA certificates; no shell, no package manager), non-root.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald-server -p herald-operator \
 && mkdir /out \
 && strip -o /out/herald-server target/release/herald-server \
 && strip -o /out/herald-operator target/release/herald-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS server
COPY --from=build /out/herald-server /herald-server
USER 65532:65532
EXPOSE 6001 9601
ENTRYPOINT ["/herald-server"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/herald-operator /herald-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/herald-operator"]
