# syntax=docker/dockerfile:1
# reflect-worker for CPUs: reflect-worker (the replica), reflect-worker-ranks (the entrypoint that
# starts one reflect-worker per local rank, deploy/docker/reflect-worker-ranks.sh) and the
# `reflect` command (mkmodel for the demo model, tokenize, generate). Build from the repository
# root:
#
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t reflect-worker-cpu:0.1.0 .
#
# Runs as uid 65532 on debian:bookworm-slim with only the shared libraries the programs load.
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
# The build dependencies are tools/install-deps.sh's apt list less what only tests, fixtures and
# formatting use (clang-format, python3, python3-numpy, openssl, prometheus);
# tools/validate-deploy.sh fails when the two lists drift apart.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev libgloo-dev libpcre2-dev nlohmann-json3-dev \
      libgtest-dev libgmock-dev libbenchmark-dev libboost1.74-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The CPU kernels need AVX-512 (F/BW/VL/DQ = x86-64-v4) with AVX512_BF16, and are compiled with the
# AMX intrinsics, which run only where CPUID and the kernel allow them (worker/cpu/amx_tiles.cc).
# So the image runs on Intel Cooper Lake / Sapphire Rapids and later and on AMD Zen 4 and later,
# whatever CPU built it; -march=native (the CMake default) would tie it to the builder's CPU.
ARG REFLECT_CXX_FLAGS="-march=x86-64-v4 -mavx512bf16 -mamx-tile -mamx-bf16"
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DREFLECT_NATIVE=OFF \
      -DREFLECT_ENABLE_CUDA=OFF "-DCMAKE_CXX_FLAGS=${REFLECT_CXX_FLAGS}" \
 && cmake --build /build --target reflect-worker reflect \
 && install -D -m 0755 /build/worker/reflect-worker /stage/usr/local/bin/reflect-worker \
 && install -D -m 0755 /build/tools/reflect/reflect /stage/usr/local/bin/reflect \
 && install -D -m 0755 deploy/docker/reflect-worker-ranks.sh \
      /stage/usr/local/bin/reflect-worker-ranks \
 && install -D -m 0644 -t /stage/usr/local/share/reflect/llama-3.1-tokenizer \
      third_party/llama-3.1-tokenizer/tokenizer.json \
      third_party/llama-3.1-tokenizer/tokenizer_config.json \
      third_party/llama-3.1-tokenizer/SOURCE.md \
 && mkdir -p /packages \
 && deploy/docker/runtime-packages.sh /stage/usr/local/bin/reflect-worker \
      /stage/usr/local/bin/reflect > /packages/runtime-packages.txt

FROM debian:${DEBIAN_RELEASE}-slim
COPY --from=build /packages/runtime-packages.txt /tmp/runtime-packages.txt
# Exactly the library packages (and versions) the build stage linked against.
# hadolint ignore=DL3008
RUN apt-get update \
 && xargs --arg-file=/tmp/runtime-packages.txt \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 65532 reflect \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin reflect
COPY --from=build /stage/ /
USER 65532:65532
# Internal gRPC (reflect.internal.v1 + grpc.health.v1), Prometheus /metrics (with --metrics_port
# 9400, as the Helm chart sets it), and the replica group's rendezvous (--rendezvous_port).
EXPOSE 50061 9400 29500
# No HEALTHCHECK: the worker's health is grpc.health.v1 (no gRPC health client is packaged by
# Debian), /metrics is off unless --metrics_port is given, and a follower rank serves neither.
# The Helm chart probes the leader with Kubernetes' native gRPC probe.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/reflect-worker-ranks"]
CMD ["--help"]
