#include "router/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace reflect {

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) {
    if (!key.empty()) digests_.push_back(Hash(key));
  }
}

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::optional<std::filesystem::path>& key_file,
                                      const std::optional<std::string>& environment_variable) {
  std::vector<std::string> keys;
  if (key_file) {
    std::ifstream file(*key_file);
    if (!file) {
      return absl::InvalidArgumentError(
          absl::StrCat("api key file ", key_file->string(), ": cannot be read"));
    }
    size_t keys_in_file = 0;
    for (std::string line; std::getline(file, line);) {
      const absl::string_view key = absl::StripAsciiWhitespace(line);
      if (key.empty() || key.front() == '#') continue;
      keys.emplace_back(key);
      ++keys_in_file;
    }
    if (keys_in_file == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("api key file ", key_file->string(), ": holds no key"));
    }
  }
  if (environment_variable) {
    if (const char* value = std::getenv(environment_variable->c_str())) {
      for (absl::string_view key : absl::StrSplit(value, ',')) {
        key = absl::StripAsciiWhitespace(key);
        if (!key.empty()) keys.emplace_back(key);
      }
    }
  }
  return ApiKeys(keys);
}

ApiKeys::Digest ApiKeys::Hash(std::string_view key) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest.data());
  return digest;
}

bool ApiKeys::Contains(std::string_view key) const {
  const Digest presented = Hash(key);
  int matches = 0;
  for (const Digest& digest : digests_) {
    matches |= CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) == 0;
  }
  return matches != 0;
}

absl::Status ApiKeys::CheckAuthorization(std::optional<std::string_view> authorization) const {
  if (!enabled()) return absl::OkStatus();
  if (!authorization) {
    return absl::UnauthenticatedError(
        "missing API key: send it as the header 'Authorization: Bearer <key>'");
  }
  // This absl build has its own string_view type.
  absl::string_view value =
      absl::StripAsciiWhitespace(absl::string_view(authorization->data(), authorization->size()));
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("malformed Authorization header: expected 'Bearer <key>'");
  }
  value.remove_prefix(kScheme.size());
  const absl::string_view key = absl::StripAsciiWhitespace(value);
  if (!Contains(std::string_view(key.data(), key.size()))) {
    return absl::UnauthenticatedError("incorrect API key");
  }
  return absl::OkStatus();
}

}  // namespace reflect
