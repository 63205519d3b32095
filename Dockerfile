# ringkv in a container: a build stage with the Rust toolchain, then a small
# runtime stage with the binary alone, run as an unprivileged user.
#
#   docker build -t ringkv .
#   docker run -v ringkv-data:/var/lib/ringkv -v ./ringkv.toml:/etc/ringkv/ringkv.toml:ro \
#       -p 7379:7379 -p 7380:7380 -p 7381:7381 ringkv
#
# The node reads /etc/ringkv/ringkv.toml (mount yours: listen addresses,
# seeds, [tls] and [auth]; a node listening beyond loopback needs client TLS
# and users, see SECURITY.md) and keeps its data, certificates included, in
# the volume /var/lib/ringkv. What was checked on a machine without a
# registry: deploy/docker/README.md.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ringkv \
 && strip target/release/ringkv

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ringkv \
        --shell /usr/sbin/nologin ringkv \
 && mkdir -p /var/lib/ringkv /etc/ringkv \
 && chown ringkv:ringkv /var/lib/ringkv
COPY --from=build /src/target/release/ringkv /usr/local/bin/ringkv
USER 10001:10001
WORKDIR /var/lib/ringkv
VOLUME ["/var/lib/ringkv"]
# RESP, HTTP (dashboard, API, /metrics), cluster.
EXPOSE 7379 7380 7381
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringkv"]
CMD ["server", "--config", "/etc/ringkv/ringkv.toml", "--data-dir", "/var/lib/ringkv"]
