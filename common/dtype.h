// Element types of weights on disk and in memory, with exact scalar conversions.
//
// bf16 -> f32 and f16 -> f32 are exact; f32 -> bf16 rounds to nearest even (NaN kept quiet),
// matching torch's `tensor.to(torch.bfloat16)`.
#pragma once

#include <bit>
#include <cstdint>
#include <string_view>

namespace reflect {

enum class DType { kF32, kF16, kBF16 };

// Bytes per element.
constexpr int DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

// Safetensors spelling: "F32", "F16", "BF16".
std::string_view DTypeName(DType dtype);

inline float Bf16ToF32(uint16_t bits) { return std::bit_cast<float>(uint32_t{bits} << 16); }

inline uint16_t F32ToBf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);

}  // namespace reflect
