#include "worker/cpu/rope.h"

#include <cmath>
#include <numbers>

namespace reflect::cpu {

Rope::Rope(const ModelConfig& config) {
  const int64_t half = config.head_dim / 2;
  const float theta = static_cast<float>(config.rope_theta);
  inverse_frequencies_.resize(half);
  for (int64_t index = 0; index < half; ++index) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in f32.
    const float exponent = static_cast<float>(2 * index) / static_cast<float>(config.head_dim);
    const float power =
        static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
    inverse_frequencies_[index] = 1.0f / power;
  }
  if (!config.rope_scaling.has_value()) return;
  const Llama3RopeScaling& scaling = *config.rope_scaling;
  const float factor = static_cast<float>(scaling.factor);
  const float low_factor = static_cast<float>(scaling.low_freq_factor);
  const float high_factor = static_cast<float>(scaling.high_freq_factor);
  const float original = static_cast<float>(scaling.original_max_position_embeddings);
  const float low_wavelength = original / low_factor;
  const float high_wavelength = original / high_factor;
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (float& frequency : inverse_frequencies_) {
    const float wavelength = two_pi / frequency;
    float scaled = wavelength > low_wavelength ? frequency / factor : frequency;
    if (!(wavelength < high_wavelength) && !(wavelength > low_wavelength)) {
      const float smooth = (original / wavelength - low_factor) / (high_factor - low_factor);
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    frequency = scaled;
  }
}

void Rope::Angles(int64_t position, float* cos_sin) const {
  const int64_t half = half_dim();
  const float position_float = static_cast<float>(position);
  for (int64_t index = 0; index < half; ++index) {
    const double angle = static_cast<double>(position_float * inverse_frequencies_[index]);
    cos_sin[index] = static_cast<float>(std::cos(angle));
    cos_sin[half + index] = static_cast<float>(std::sin(angle));
  }
}

void Rope::Rotate(const float* cos_sin, float* head) const {
  const int64_t half = half_dim();
  const float* cosines = cos_sin;
  const float* sines = cos_sin + half;
  for (int64_t index = 0; index < half; ++index) {
    const float first = head[index];
    const float second = head[index + half];
    // q * cos + rotate_half(q) * sin, with rotate_half(q) = (-q[half:], q[:half]).
    head[index] = first * cosines[index] + (-second) * sines[index];
    head[index + half] = second * cosines[index] + first * sines[index];
  }
}

}  // namespace reflect::cpu
