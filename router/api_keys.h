// Optional API keys for the router's front ends: HTTP `Authorization: Bearer <key>` and the same
// value in gRPC `authorization` metadata.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace reflect {

// The set of accepted API keys; empty means authentication is off.
//
// Keys are kept only as SHA-256 digests, and a check hashes the presented key and compares it with
// every stored digest without early exit (CRYPTO_memcmp), so the time taken does not depend on
// which key, or which prefix of a key, matched. Thread-safety: immutable after construction; all
// methods may run concurrently. Cost: one SHA-256 plus 32 bytes compared per key, per check.
class ApiKeys {
 public:
  // Authentication off.
  ApiKeys() = default;
  // Exactly these keys (empty strings are skipped).
  explicit ApiKeys(const std::vector<std::string>& keys);

  // Keys from `key_file` (one per line; blank lines and lines starting with '#' are skipped;
  // surrounding whitespace is trimmed) and from the environment variable `environment_variable`
  // (comma-separated; unset or empty adds none). Either may be absent. A file that cannot be read,
  // or that holds no key, is an error: a typo must not switch authentication off.
  static absl::StatusOr<ApiKeys> Load(const std::optional<std::filesystem::path>& key_file,
                                      const std::optional<std::string>& environment_variable);

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }

  // True when `key` is one of the keys (constant time in the key's content, see above).
  bool Contains(std::string_view key) const;

  // OK when authentication is off, or when `authorization` (the header's value, if sent) is
  // "Bearer <key>" with a known key (scheme case-insensitive). Else UNAUTHENTICATED with a message
  // that never echoes the presented key.
  absl::Status CheckAuthorization(std::optional<std::string_view> authorization) const;

 private:
  using Digest = std::array<uint8_t, 32>;
  static Digest Hash(std::string_view key);

  std::vector<Digest> digests_;
};

}  // namespace reflect
