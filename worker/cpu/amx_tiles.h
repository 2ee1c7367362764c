// AMX availability, the bf16 matmul kernel choice, and the per-thread tile configuration.
//
// AMX (tdpbf16ps) is usable when CPUID reports amx-tile and amx-bf16 and Linux grants this
// process the XTILEDATA state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once per process; the grant
// covers every thread). The kernel choice for bf16 weights is made once per process:
// REFLECT_CPU_MATMUL=avx512 forces vdpbf16ps, otherwise AMX when usable, else vdpbf16ps.
//
// Thread-safety: all functions may be called from any thread. ConfigureAmxTiles acts on the
// calling thread only (tile configuration is per-thread state).
#pragma once

namespace reflect::cpu {

// How bf16 weights are packed and multiplied (f32 / f16 weights always use the f32 FMA kernel).
enum class Bf16Kernel {
  kAvx512,  // vdpbf16ps over 64-column VNNI panels
  kAmx,     // tdpbf16ps over 32-column panels of 1 KB B tiles
};

// True when this process may execute AMX bf16 tile instructions (checked and requested once).
bool AmxUsable();

// The process-wide kernel for bf16 weights (REFLECT_CPU_MATMUL, AmxUsable); read once.
Bf16Kernel SelectedBf16Kernel();

// Loads the one tile configuration the AMX matmul uses (all 8 tiles 16 rows × 64 bytes) into
// the calling thread, unless this thread already holds it. Requires AmxUsable().
void ConfigureAmxTiles();

}  // namespace reflect::cpu
