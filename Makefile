# The two commands of the README: `make run` and `make test`. Everything else is a helper.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
DEMO_MODEL ?= models/tiny
REFLECT := $(BUILD_DIR)/tools/reflect/reflect

.PHONY: deps build run test bench format clean demo-model

deps:
	@tools/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

$(DEMO_MODEL)/config.json: | build
	$(REFLECT) mkmodel --preset tiny --out $(DEMO_MODEL)

demo-model: build $(DEMO_MODEL)/config.json

run: demo-model
	$(REFLECT) generate --model $(DEMO_MODEL) --chat --max-tokens 48 \
	  --prompt "Why is the sky blue?"

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: demo-model
	tools/bench.sh $(BUILD_DIR)

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
