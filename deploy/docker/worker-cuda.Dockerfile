# syntax=docker/dockerfile:1
# reflect-worker for NVIDIA GPUs: the same programs as worker-cpu.Dockerfile, built with the CUDA
# backend (REFLECT_ENABLE_CUDA: worker/cuda/, cuBLASLt) and NCCL. Build from the repository root:
#
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t reflect-worker-cuda:0.1.0 .
#
# Why Debian and NVIDIA's Debian 12 repository rather than an nvidia/cuda base image: gRPC, protobuf
# and abseil come from Debian bookworm, exactly as in CI (tools/install-deps.sh), and a binary must
# run on the distribution it was linked on. NVIDIA's images are Ubuntu, where every one of those
# libraries has another version. So both stages are Debian bookworm with NVIDIA's CUDA repository
# for Debian 12 added; the runtime stage gets only the CUDA runtime, cuBLAS and NCCL libraries the
# binaries load, pinned to the versions the build used. The driver (libcuda) is the host's, mounted
# by the NVIDIA container toolkit; CUDA 13.0 needs driver 580 or newer.
#
# Build arguments: CUDA_VERSION (13.0; the apt suffix 13-0 is derived from it),
# CUDA_ARCHITECTURES (90: H100/H200; "90;100" adds B200; CUDA 13 builds sm_75 and newer),
# NVIDIA_APT_REPO (debian12). This image is not built in CI (no registry is reachable there);
# tools/validate-deploy.sh lints it.
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
ARG CUDA_VERSION=13.0
ARG NVIDIA_APT_REPO=debian12
ADD https://developer.download.nvidia.com/compute/cuda/repos/${NVIDIA_APT_REPO}/x86_64/cuda-keyring_1.1-1_all.deb /keyring/cuda-keyring.deb
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The build dependencies are tools/install-deps.sh's apt list less what only tests, fixtures and
# formatting use (clang-format, python3, python3-numpy, openssl, prometheus), plus the CUDA
# compiler, runtime, cuBLAS and NCCL (the NCCL build made for this CUDA version).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && dpkg -i /keyring/cuda-keyring.deb \
 && apt-get update \
 && cuda_suffix="${CUDA_VERSION/./-}" \
 && nccl_version="$(apt-cache madison libnccl2 | awk -v want="+cuda${CUDA_VERSION}" \
      'index($3, want) { print $3; exit }')" \
 && if [ -z "${nccl_version}" ]; then \
      echo "no libnccl2 build for CUDA ${CUDA_VERSION} in ${NVIDIA_APT_REPO}" >&2; exit 1; \
    fi \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev libgloo-dev libpcre2-dev nlohmann-json3-dev \
      libgtest-dev libgmock-dev libbenchmark-dev libboost1.74-dev libssl-dev \
      "cuda-nvcc-${cuda_suffix}" "cuda-cudart-dev-${cuda_suffix}" "libcublas-dev-${cuda_suffix}" \
      "libnccl2=${nccl_version}" "libnccl-dev=${nccl_version}" \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda-${CUDA_VERSION}/bin:${PATH} \
    LD_LIBRARY_PATH=/usr/local/cuda-${CUDA_VERSION}/targets/x86_64-linux/lib
WORKDIR /src
COPY . .
# Host code: see worker-cpu.Dockerfile (AVX-512 + AVX512_BF16 hosts: Sapphire Rapids, Zen 4 and
# later, which is what current GPU servers have).
ARG REFLECT_CXX_FLAGS="-march=x86-64-v4 -mavx512bf16 -mamx-tile -mamx-bf16"
ARG CUDA_ARCHITECTURES=90
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DREFLECT_NATIVE=OFF \
      -DREFLECT_ENABLE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
      "-DCMAKE_CXX_FLAGS=${REFLECT_CXX_FLAGS}" \
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
ARG CUDA_VERSION=13.0
COPY --from=build /keyring/cuda-keyring.deb /tmp/cuda-keyring.deb
COPY --from=build /packages/runtime-packages.txt /tmp/runtime-packages.txt
# Exactly the library packages (and versions) the build stage linked against, CUDA's included.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && dpkg -i /tmp/cuda-keyring.deb \
 && apt-get update \
 && xargs --arg-file=/tmp/runtime-packages.txt \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt /tmp/cuda-keyring.deb \
 && groupadd --system --gid 65532 reflect \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin reflect
COPY --from=build /stage/ /
# What the NVIDIA container toolkit reads: which devices (the device plugin overrides this with the
# pod's allocation), which driver libraries to mount, and the oldest usable CUDA driver API.
ENV LD_LIBRARY_PATH=/usr/local/cuda-${CUDA_VERSION}/targets/x86_64-linux/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=${CUDA_VERSION}"
USER 65532:65532
EXPOSE 50061 9400 29500
# No HEALTHCHECK, for the reasons in worker-cpu.Dockerfile.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/reflect-worker-ranks"]
CMD ["--help"]
