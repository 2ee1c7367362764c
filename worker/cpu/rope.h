// Rotary position embedding as Hugging Face's LlamaRotaryEmbedding, incl. rope_type "llama3".
//
// inv_freq is computed in f32 the way transformers does (including the llama3 wavelength
// scaling); the angle for a position is position * inv_freq rounded to f32, and cos/sin of it
// are correctly rounded. Rotation uses rotate_half: pairs (i, i + head_dim / 2).
//
// Immutable after construction; safe to share between threads.
#pragma once

#include <cstdint>
#include <vector>

#include "common/model_config.h"

namespace reflect::cpu {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  int64_t half_dim() const { return static_cast<int64_t>(inverse_frequencies_.size()); }
  const std::vector<float>& inverse_frequencies() const { return inverse_frequencies_; }

  // Writes cos then sin of every frequency at `position`: 2 * half_dim floats.
  void Angles(int64_t position, float* cos_sin) const;

  // Rotates one head of head_dim floats in place, given Angles() of its position.
  void Rotate(const float* cos_sin, float* head) const;

 private:
  std::vector<float> inverse_frequencies_;
};

}  // namespace reflect::cpu
