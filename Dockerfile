# veilnet-conflux in a container. Build on a machine that can download Deno's runtime (deno compile needs it).
#   docker build -t veilnet-conflux .
#   docker run -d --name veilnet --cap-add NET_ADMIN --device /dev/net/tun --network host \
#     -v veilnet-config:/root/.config/conflux --env-file .env veilnet-conflux
# or: cp .env.example .env (fill it in) && docker compose up -d
# NET_ADMIN and /dev/net/tun are all the node needs (no --privileged). The first start registers with
# VEILNET_REGISTRATION_TOKEN and keeps the registration in the config volume, so a restart does not register
# again. The healthcheck asks the node's /healthz (loopback only), which answers 200 while it is connected.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock main.ts compile.sh ./
COPY src ./src
COPY ffi ./ffi
RUN deno install --frozen && bash compile.sh "$(uname -m)" && cp "dist/veilnet-conflux-linux-$(uname -m)" /veilnet-conflux

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl iproute2 nftables \
  && rm -rf /var/lib/apt/lists/*
COPY --from=build /veilnet-conflux /usr/local/bin/veilnet-conflux
COPY container/entrypoint.sh /usr/local/bin/veilnet-entrypoint
ENV VEILNET_METRICS=127.0.0.1:9464
VOLUME ["/root/.config/conflux"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null "http://${VEILNET_METRICS}/healthz" || exit 1
ENTRYPOINT ["veilnet-entrypoint"]
CMD ["run"]
