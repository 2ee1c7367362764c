# The two commands of the README: `make run` and `make test`. Everything else is a helper.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
DEMO_MODEL ?= models/tiny
REFLECT := $(BUILD_DIR)/tools/reflect/reflect

.PHONY: deps build run test bench bench-llamacpp bench-router loadtest format clean demo-model

deps:
	@tools/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

$(DEMO_MODEL)/config.json: | build
	$(REFLECT) mkmodel --preset tiny --out $(DEMO_MODEL)

demo-model: build $(DEMO_MODEL)/config.json

# Serves the demo model: a router (gRPC :50051, HTTP :8000) and one replica; Ctrl-C stops it.
run: demo-model
	$(REFLECT) serve --model $(DEMO_MODEL)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: demo-model
	tools/bench.sh $(BUILD_DIR)

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)

# reflect vs llama.cpp on the same 1b bf16 weights (installs llama-cpp-python: a long build).
bench-llamacpp: build
	python3 -c "import llama_cpp, gguf" 2>/dev/null || python3 -m pip install --quiet gguf sentencepiece llama-cpp-python
	test -f models/1b/config.json || $(REFLECT) mkmodel --preset 1b --dtype bf16 --out models/1b
	python3 tools/bench/compare_llamacpp.py --reflect $(REFLECT) --model models/1b

# Router overhead, router CPU per token, open streams, prefix-cache TTFT (BENCHMARKS.md).
bench-router: demo-model
	python3 tools/bench/router_bench.py --build-dir $(BUILD_DIR) --model $(DEMO_MODEL)

# A load test against a running cluster (`make run` in another shell), e.g.
#   make loadtest SCENARIO=loadtest/scenarios/steady.json RATE_SCALE=0.5
SCENARIO ?= loadtest/scenarios/steady.json
RATE_SCALE ?= 1
LOADTEST_OUT ?= $(BUILD_DIR)/loadtest-report
loadtest: build
	$(BUILD_DIR)/loadtest/reflect-loadtest --scenario $(SCENARIO) --rate_scale $(RATE_SCALE) \
	  --grpc_target localhost:50051 --http_target localhost:8000 \
	  --json_out $(LOADTEST_OUT).json --html_out $(LOADTEST_OUT).html
