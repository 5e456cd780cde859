# syntax=docker/dockerfile:1
# Both service images, built from the workspace root with one shared build stage:
#   docker build --target publisher -t message-publisher:0.1.0 .
#   docker build --target consumer -t message-consumer:0.1.0 .
# Dependencies are compiled in a layer of their own (cargo-chef), so a change to the project's own code
# rebuilds only the last layers, and building the second image reuses the first's build. Each runtime
# image holds its binary and the C runtime, and nothing else.

FROM rust:1.95-slim-bookworm AS chef
# make builds jemalloc, the services' allocator.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package publisher --package consumer
COPY . .
RUN cargo build --release --locked --package publisher --package consumer

FROM gcr.io/distroless/cc-debian12:nonroot AS publisher
COPY --from=builder /build/target/release/publisher /usr/local/bin/publisher
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/publisher"]

FROM gcr.io/distroless/cc-debian12:nonroot AS consumer
COPY --from=builder /build/target/release/consumer /usr/local/bin/consumer
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/consumer"]
