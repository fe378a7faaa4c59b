# A thin wrapper over CMake (CMake is the build truth).
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all deps test check demo asan bench clean install

all: $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

$(BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

deps:
	sh scripts/deps.sh

# kiro-rt, kiro-sim, the Lua module (kiro.so and lua/kiro) and the C core
# for C hosts (libkiro-core.a, its headers, kiro-core.pc) under PREFIX, in
# DESTDIR when staged. The installed kiro-rt carries its Lua: any prefix works.
install: all
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The main job: one reply from the backend (kiro-sim unless kiro-cli is installed).
demo: all
	./scripts/demo.sh

$(ASAN_BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(ASAN_BUILD) -DKIRO_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)

asan: $(ASAN_BUILD)/Makefile
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite, then again under AddressSanitizer + UBSan (what CI runs).
check: test asan

# Core round trips, reloads and composed policies, the seed's benchmark
# through the server (hyperfine), and the server under attack (issue 7's
# bounds).
bench: all
	$(BUILD)/kiro-rt run bench/core.lua
	$(BUILD)/kiro-rt run bench/policies.lua
	KIRO_BUILD_DIR=$(CURDIR)/$(BUILD) lua5.4 bench/server.lua
	KIRO_BUILD_DIR=$(CURDIR)/$(BUILD) lua5.4 bench/attack.lua
	KIRO_BUILD_DIR=$(CURDIR)/$(BUILD) lua5.4 bench/bot.lua

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
