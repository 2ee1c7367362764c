#include "worker/cpu/amx_tiles.h"

#include <asm/prctl.h>
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace reflect::cpu {
namespace {

// The XSAVE feature number of the AMX tile data (TILEDATA) state.
constexpr unsigned long kXfeatureTileData = 18;

bool DetectAndRequestAmx() {
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  constexpr unsigned int kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
  if ((edx & kAmxBf16) == 0 || (edx & kAmxTile) == 0) return false;
  // Fails on kernels without AMX support or where XCR0 does not enable the tile state.
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, kXfeatureTileData) != 0) return false;
  unsigned long permitted = 0;
  if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) != 0) return false;
  return (permitted & (1ul << kXfeatureTileData)) != 0;
}

// The ldtilecfg operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64);

constexpr TileConfig MakeTileConfig() {
  TileConfig config = {};
  config.palette_id = 1;
  for (int tile = 0; tile < 8; ++tile) {
    config.bytes_per_row[tile] = 64;
    config.rows[tile] = 16;
  }
  return config;
}

// In static memory: GCC 12 drops stores into a local config that only ldtilecfg reads.
constexpr TileConfig kTileConfig = MakeTileConfig();

}  // namespace

bool AmxUsable() {
  static const bool usable = DetectAndRequestAmx();
  return usable;
}

Bf16Kernel SelectedBf16Kernel() {
  static const Bf16Kernel kernel = [] {
    const char* forced = std::getenv("REFLECT_CPU_MATMUL");
    if (forced != nullptr && std::strcmp(forced, "avx512") == 0) return Bf16Kernel::kAvx512;
    return AmxUsable() ? Bf16Kernel::kAmx : Bf16Kernel::kAvx512;
  }();
  return kernel;
}

void ConfigureAmxTiles() {
  thread_local bool configured = false;
  if (configured) return;
  _tile_loadconfig(&kTileConfig);
  configured = true;
}

}  // namespace reflect::cpu
