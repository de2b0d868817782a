# veilnet-conflux in a container. Build on a machine that can download Deno's runtime (deno compile needs it).
#   docker build -t veilnet-conflux .
#   docker run -d --name veilnet --cap-add NET_ADMIN --device /dev/net/tun --network host \
#     -v veilnet-config:/root/.config/conflux --env-file .env veilnet-conflux
# NET_ADMIN and /dev/net/tun are all the node needs (no --privileged). The config volume keeps the registration,
# so a restarted container does not register again.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts compile.sh ./
COPY src ./src
COPY ffi ./ffi
RUN deno install --frozen && bash compile.sh "$(uname -m)" && cp "dist/veilnet-conflux-linux-$(uname -m)" /veilnet-conflux

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates iproute2 nftables \
  && rm -rf /var/lib/apt/lists/*
COPY --from=build /veilnet-conflux /usr/local/bin/veilnet-conflux
VOLUME ["/root/.config/conflux"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD ["veilnet-conflux", "status"]
ENTRYPOINT ["veilnet-conflux"]
CMD ["run"]
