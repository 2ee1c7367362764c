#include "router/stop_matcher.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace reflect {
namespace {

struct Outcome {
  std::string text;
  int stop_index = -1;  // -1: no match

  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& stream, const Outcome& outcome) {
  return stream << "{\"" << outcome.text << "\", " << outcome.stop_index << "}";
}

Outcome Match(const std::vector<std::string>& stops, const std::vector<std::string>& chunks) {
  StopMatcher matcher(stops);
  Outcome outcome;
  for (const std::string& chunk : chunks) {
    const StopMatcherResult result = matcher.Push(chunk);
    outcome.text += result.text;
    if (result.match) {
      EXPECT_EQ(outcome.stop_index, -1) << "matched twice";
      outcome.stop_index = static_cast<int>(result.match->stop_index);
    }
  }
  outcome.text += matcher.Flush();
  EXPECT_EQ(matcher.stopped(), outcome.stop_index >= 0);
  return outcome;
}

// The definition, by brute force: stop where the first stop string ends; the longest one there,
// then the lowest index.
Outcome Reference(const std::vector<std::string>& stops, const std::string& text) {
  for (size_t end = 1; end <= text.size(); ++end) {
    int best = -1;
    for (size_t index = 0; index < stops.size(); ++index) {
      const std::string& stop = stops[index];
      if (stop.empty() || stop.size() > end || text.compare(end - stop.size(), stop.size(), stop))
        continue;
      if (best < 0 || stop.size() > stops[best].size()) best = static_cast<int>(index);
    }
    if (best >= 0) return {text.substr(0, end - stops[best].size()), best};
  }
  return {text, -1};
}

std::vector<std::string> RandomChunks(const std::string& text, std::mt19937& random,
                                      size_t max_chunk) {
  std::uniform_int_distribution<size_t> length(0, max_chunk);
  std::vector<std::string> chunks;
  for (size_t position = 0; position < text.size();) {
    const size_t size = std::min(length(random), text.size() - position);
    chunks.push_back(text.substr(position, size));
    position += size;
  }
  return chunks;
}

std::string RandomString(std::mt19937& random, size_t min_length, size_t max_length,
                         std::string_view alphabet) {
  std::uniform_int_distribution<size_t> length(min_length, max_length);
  std::uniform_int_distribution<size_t> letter(0, alphabet.size() - 1);
  std::string text(length(random), ' ');
  for (char& character : text) character = alphabet[letter(random)];
  return text;
}

TEST(StopMatcherTest, StopsBeforeTheStopString) {
  EXPECT_EQ(Match({"\n\n"}, {"Hello", " world\n", "\nmore"}), (Outcome{"Hello world", 0}));
  EXPECT_EQ(Match({"</output>"}, {"<output>42</out", "put>\n"}), (Outcome{"<output>42", 0}));
}

TEST(StopMatcherTest, NoStopReleasesEverything) {
  EXPECT_EQ(Match({"xyz"}, {"abc", "xy"}), (Outcome{"abcxy", -1}));
  EXPECT_EQ(Match({}, {"abc", "def"}), (Outcome{"abcdef", -1}));
  EXPECT_EQ(Match({""}, {"abc"}), (Outcome{"abc", -1}));  // empty stop strings never match
}

TEST(StopMatcherTest, StopAtStart) {
  EXPECT_EQ(Match({"Hello"}, {"Hello world"}), (Outcome{"", 0}));
  EXPECT_EQ(Match({"Hello"}, {"He", "llo", " world"}), (Outcome{"", 0}));
}

TEST(StopMatcherTest, HoldsBackOnlyWhatCouldStillMatch) {
  StopMatcher matcher({"abc", "bd"});
  EXPECT_EQ(matcher.Push("xxab").text, "xx");  // "ab" may become "abc"
  EXPECT_EQ(matcher.Push("x").text, "abx");
  EXPECT_EQ(matcher.Push("b").text, "");  // "b" may become "bd"
  EXPECT_EQ(matcher.Push("e").text, "be");
  const StopMatcherResult result = matcher.Push("qabd");
  EXPECT_EQ(result.text, "qa");
  ASSERT_TRUE(result.match.has_value());
  EXPECT_EQ(result.match->stop_index, 1u);
  EXPECT_EQ(matcher.Push("more").text, "");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, OverlappingStopStrings) {
  // "bc" ends before "abcd" could: the first string to end wins.
  EXPECT_EQ(Match({"abcd", "bc"}, {"xabcd"}), (Outcome{"xa", 1}));
  // Both end at the same byte: the longer one wins.
  EXPECT_EQ(Match({"c", "abc"}, {"xab", "c"}), (Outcome{"x", 1}));
  // "aa" fails on the third 'a' and must resume at "aa" (failure link), not restart.
  EXPECT_EQ(Match({"aab", "ab"}, {"a", "a", "a", "b"}), (Outcome{"a", 0}));
  EXPECT_EQ(Match({"abab", "bac"}, {"ababac"}), (Outcome{"", 0}));
  EXPECT_EQ(Match({"abac", "bab"}, {"abab"}), (Outcome{"a", 1}));
  // Duplicates: the lowest index.
  EXPECT_EQ(Match({"z", "stop", "stop"}, {"a stop"}), (Outcome{"a ", 1}));
}

TEST(StopMatcherTest, Unicode) {
  const std::string text = "こんにちは、日本語の世界😀です";
  const std::vector<std::string> stops = {"世界😀", "日本人", "😀!"};
  const Outcome expected = {"こんにちは、日本語の", 0};
  for (size_t split = 0; split <= text.size(); ++split) {
    ASSERT_EQ(Match(stops, {text.substr(0, split), text.substr(split)}), expected) << split;
  }
  // Released text between pushes ends on a character boundary when the input does.
  StopMatcher matcher(stops);
  EXPECT_EQ(matcher.Push("日本").text, "");
  EXPECT_EQ(matcher.Push("語").text, "日本語");
}

TEST(StopMatcherTest, RandomChunkingsMatchTheDefinition) {
  std::mt19937 random(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stops;
    const int stop_count = 1 + trial % 5;
    for (int index = 0; index < stop_count; ++index)
      stops.push_back(RandomString(random, 1, 4, "abc"));
    const std::string text = RandomString(random, 0, 40, "abc");
    const Outcome expected = Reference(stops, text);
    for (size_t max_chunk : {1, 3, 8}) {
      ASSERT_EQ(Match(stops, RandomChunks(text, random, max_chunk)), expected)
          << "trial " << trial << " text " << text;
    }
  }
}

TEST(StopMatcherTest, HundredsOfStopStrings) {
  std::mt19937 random(11);
  std::vector<std::string> stops;
  for (int index = 0; index < 300; ++index)
    stops.push_back(RandomString(random, 3, 12, "abcdefgh"));
  for (int trial = 0; trial < 50; ++trial) {
    const std::string text = RandomString(random, 100, 2000, "abcdefgh");
    const Outcome expected = Reference(stops, text);
    ASSERT_EQ(Match(stops, RandomChunks(text, random, 16)), expected) << "trial " << trial;
  }
}

}  // namespace
}  // namespace reflect
