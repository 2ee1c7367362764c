// The block hash (common/block_hash.h) and the prefix-cache Bloom filter (common/prefix_summary.h)
// against tests/fixtures/prefix_summary.json, which tools/fixtures/make_prefix_summary_fixture.py
// computes in plain Python from the text of reflect.internal.v1.PrefixCacheSummary: the router
// and the replica agree only if both match the spec bit for bit. Then the filter's statistics: no
// false negatives, and a false-positive rate near theory at the default size.
#include "common/prefix_summary.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/block_hash.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

nlohmann::json LoadFixture() {
  std::ifstream file(testing::FixturePath("prefix_summary.json"));
  EXPECT_TRUE(file.good()) << "missing tests/fixtures/prefix_summary.json";
  return nlohmann::json::parse(file);
}

uint64_t ParseHex64(const std::string& text) { return std::stoull(text, nullptr, 16); }

std::vector<uint64_t> ChainHashes(const std::vector<int32_t>& tokens, int32_t block_size) {
  BlockHashChain chain(block_size);
  chain.Extend(tokens);
  return {chain.hashes().begin(), chain.hashes().end()};
}

std::vector<uint64_t> FixtureHashes(const nlohmann::json& chain) {
  std::vector<uint64_t> hashes;
  for (const nlohmann::json& hash : chain.at("hashes")) {
    hashes.push_back(ParseHex64(hash.get<std::string>()));
  }
  return hashes;
}

const nlohmann::json& FixtureChain(const nlohmann::json& fixture, const std::string& name) {
  for (const nlohmann::json& chain : fixture.at("chains")) {
    if (chain.at("name") == name) return chain;
  }
  ADD_FAILURE() << "no chain " << name;
  return fixture.at("chains").at(0);
}

TEST(BlockHashTest, MatchesTheSpecReference) {
  const nlohmann::json fixture = LoadFixture();
  const auto block_size = fixture.at("block_size_tokens").get<int32_t>();
  EXPECT_EQ(kRootBlockHash, 0u);
  for (const nlohmann::json& chain : fixture.at("chains")) {
    const auto tokens = chain.at("tokens").get<std::vector<int32_t>>();
    const std::vector<uint64_t> expected = FixtureHashes(chain);
    EXPECT_EQ(ChainHashes(tokens, block_size), expected) << chain.at("name");
    if (!expected.empty()) {
      EXPECT_EQ(HashBlock(0, absl::MakeConstSpan(tokens).subspan(0, block_size)), expected[0]);
    }
  }
}

TEST(BlockHashTest, IsIncrementalAndChained) {
  const nlohmann::json fixture = LoadFixture();
  const auto block_size = fixture.at("block_size_tokens").get<int32_t>();
  const auto tokens =
      FixtureChain(fixture, "system_prompt").at("tokens").get<std::vector<int32_t>>();
  BlockHashChain chain(block_size);
  for (size_t length = 0; length <= tokens.size(); ++length) {
    chain.Extend(absl::MakeConstSpan(tokens).subspan(0, length));
  }
  EXPECT_EQ(std::vector<uint64_t>(chain.hashes().begin(), chain.hashes().end()),
            ChainHashes(tokens, block_size));
  // The fixture's other chains share system_prompt's first block, or only its second block.
  const std::vector<uint64_t> system = FixtureHashes(FixtureChain(fixture, "system_prompt"));
  const std::vector<uint64_t> shared = FixtureHashes(FixtureChain(fixture, "shared_first_block"));
  const std::vector<uint64_t> other = FixtureHashes(FixtureChain(fixture, "other_first_block"));
  EXPECT_EQ(shared[0], system[0]);
  EXPECT_NE(shared[1], system[1]);
  EXPECT_NE(other[1], system[1]);
}

TEST(PrefixSummaryTest, BitsMatchTheSpecReference) {
  const nlohmann::json fixture = LoadFixture();
  const auto block_size = fixture.at("block_size_tokens").get<int32_t>();
  for (const nlohmann::json& filter : fixture.at("filters")) {
    const auto size_bytes = filter.at("size_bytes").get<int64_t>();
    const auto probe_count = filter.at("probe_count").get<int32_t>();
    SCOPED_TRACE(::testing::Message() << size_bytes << " bytes, " << probe_count << " probes");

    // Each hash alone sets exactly the bits the reference probes name.
    for (const nlohmann::json& probe : filter.at("probes")) {
      PrefixSummary alone = MakePrefixSummary(block_size, size_bytes, probe_count);
      InsertBlockHash(ParseHex64(probe.at("hash").get<std::string>()), alone);
      std::string expected(static_cast<size_t>(size_bytes), '\0');
      for (const nlohmann::json& bit : probe.at("bits")) {
        const auto index = bit.get<size_t>();
        expected[index / 8] = static_cast<char>(expected[index / 8] | (1 << (index % 8)));
      }
      EXPECT_EQ(absl::BytesToHexString(alone.bits), absl::BytesToHexString(expected))
          << probe.at("hash");
    }

    PrefixSummary summary = MakePrefixSummary(block_size, size_bytes, probe_count);
    const std::vector<uint64_t> inserted =
        FixtureHashes(FixtureChain(fixture, filter.at("inserted_chain").get<std::string>()));
    for (const uint64_t hash : inserted) InsertBlockHash(hash, summary);
    EXPECT_EQ(summary.block_size_tokens, block_size);
    EXPECT_EQ(summary.probe_count, probe_count);
    EXPECT_EQ(summary.inserted_blocks, std::ssize(inserted));
    EXPECT_EQ(absl::BytesToHexString(summary.bits), filter.at("bits_hex").get<std::string>());
    for (const nlohmann::json& query : filter.at("queries")) {
      const std::string chain = query.at("chain").get<std::string>();
      EXPECT_EQ(CountCachedLeadingBlocks(summary, FixtureHashes(FixtureChain(fixture, chain))),
                query.at("leading_present").get<int64_t>())
          << chain;
    }
  }
}

TEST(PrefixSummaryTest, EmptySummaryHoldsNothing) {
  PrefixSummary empty{.block_size_tokens = 16, .probe_count = 7, .bits = {}, .inserted_blocks = 0};
  InsertBlockHash(42, empty);
  EXPECT_TRUE(empty.bits.empty());
  EXPECT_FALSE(MayContainBlockHash(empty, 42));
  const std::vector<uint64_t> hashes = {42, 43};
  EXPECT_EQ(CountCachedLeadingBlocks(empty, hashes), 0);
  EXPECT_EQ(CountCachedLeadingBlocks(MakePrefixSummary(16, 64, 7), hashes), 0);
}

TEST(PrefixSummaryTest, CountingStopsAtTheFirstMissingBlock) {
  std::vector<int32_t> tokens(16 * 5);
  for (size_t index = 0; index < tokens.size(); ++index) {
    tokens[index] = static_cast<int32_t>(index * 7919 % 128256);
  }
  const std::vector<uint64_t> hashes = ChainHashes(tokens, 16);
  PrefixSummary summary = MakePrefixSummary(16, 64 * 1024, 7);
  for (const int index : {0, 1, 3, 4}) InsertBlockHash(hashes[static_cast<size_t>(index)], summary);
  EXPECT_EQ(CountCachedLeadingBlocks(summary, hashes), 2);
  EXPECT_EQ(CountCachedLeadingBlocks(summary, absl::MakeConstSpan(hashes).subspan(3)), 2);
}

TEST(PrefixSummaryTest, NoFalseNegatives) {
  std::mt19937_64 random(7);
  PrefixSummary summary = MakePrefixSummary(16, 64 * 1024, 7);
  std::vector<uint64_t> hashes(10'000);
  for (uint64_t& hash : hashes) {
    hash = random();
    InsertBlockHash(hash, summary);
  }
  for (const uint64_t hash : hashes) ASSERT_TRUE(MayContainBlockHash(summary, hash)) << hash;
}

// The standard estimate (1 - e^(-k n / m))^k: about 0.65% for 64 KiB, k = 7, n = 50 000. Checked
// for uniformly random hashes and for real chained FNV hashes of random prompts (what the filter
// holds in production), since FNV's low bits, which pick the first probe, are weaker than its high
// ones.
class FalsePositiveTest : public ::testing::TestWithParam<bool> {};

TEST_P(FalsePositiveTest, RateIsNearTheory) {
  const bool chained = GetParam();
  constexpr int64_t kBytes = 64 * 1024;
  constexpr int32_t kProbes = 7;
  constexpr int64_t kInserted = 50'000;
  constexpr int64_t kQueries = 200'000;
  constexpr int32_t kBlocksPerPrompt = 100;
  std::mt19937_64 random(chained ? 11 : 13);
  const auto make_hashes = [&](int64_t count) {
    std::vector<uint64_t> hashes;
    if (!chained) {
      for (int64_t index = 0; index < count; ++index) hashes.push_back(random());
      return hashes;
    }
    std::uniform_int_distribution<int32_t> token(0, 128'255);
    std::vector<int32_t> prompt(16 * kBlocksPerPrompt);
    while (std::ssize(hashes) < count) {
      for (int32_t& id : prompt) id = token(random);
      const std::vector<uint64_t> chain = ChainHashes(prompt, 16);
      hashes.insert(hashes.end(), chain.begin(), chain.end());
    }
    hashes.resize(static_cast<size_t>(count));
    return hashes;
  };
  PrefixSummary summary = MakePrefixSummary(16, kBytes, kProbes);
  for (const uint64_t hash : make_hashes(kInserted)) InsertBlockHash(hash, summary);
  int64_t false_positives = 0;
  for (const uint64_t hash : make_hashes(kQueries)) {
    false_positives += MayContainBlockHash(summary, hash) ? 1 : 0;
  }
  const double rate = static_cast<double>(false_positives) / kQueries;
  const double theory =
      std::pow(1.0 - std::exp(-static_cast<double>(kProbes) * kInserted / (8.0 * kBytes)), kProbes);
  // About 1300 expected hits, so sampling noise is ~3%; double hashing costs a little over theory.
  EXPECT_GT(rate, 0.8 * theory) << "theory " << theory;
  EXPECT_LT(rate, 1.25 * theory) << "theory " << theory;
  EXPECT_LT(rate, 0.01);
}

INSTANTIATE_TEST_SUITE_P(RandomAndChainedHashes, FalsePositiveTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "ChainedFnvHashes" : "RandomHashes";
                         });

}  // namespace
}  // namespace reflect
