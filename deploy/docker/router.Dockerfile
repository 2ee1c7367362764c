# syntax=docker/dockerfile:1
# reflect-router: the router alone (tokenizer, chat template, admission, routing; no model math).
# Build from the repository root (the context is the whole source tree, filtered by .dockerignore):
#
#   docker build -f deploy/docker/router.Dockerfile -t reflect-router:0.1.0 .
#
# Runs as uid 65532 on debian:bookworm-slim with only the shared libraries reflect-router loads.
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
# The build dependencies are tools/install-deps.sh's apt list less what only tests, fixtures and
# formatting use (clang-format, python3, python3-numpy, openssl, prometheus);
# tools/validate-deploy.sh fails when the two lists drift apart. Versions are those of the Debian
# release, as in CI.
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
# The router has no vector kernels, so it is built for any x86-64-v2 CPU rather than the build
# machine's (-march=native, the CMake default, would tie the image to the builder's CPU).
ARG REFLECT_CXX_FLAGS="-march=x86-64-v2"
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DREFLECT_NATIVE=OFF \
      -DREFLECT_ENABLE_CUDA=OFF "-DCMAKE_CXX_FLAGS=${REFLECT_CXX_FLAGS}" \
 && cmake --build /build --target reflect-router \
 && install -D -m 0755 /build/router/reflect-router /stage/usr/local/bin/reflect-router \
 && mkdir -p /packages \
 && deploy/docker/runtime-packages.sh /stage/usr/local/bin/reflect-router \
      > /packages/runtime-packages.txt

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
# Public gRPC (reflect.v1) and HTTP (OpenAI API, /metrics, /healthz, /readyz).
EXPOSE 50051 8000
# GET /healthz on the HTTP port, with bash's /dev/tcp (the slim image has no HTTP client). Set
# REFLECT_HEALTH_PORT when --http_port is not 8000. Kubernetes ignores this; the chart has probes.
ENV REFLECT_HEALTH_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${REFLECT_HEALTH_PORT} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/reflect-router"]
CMD ["--help"]
