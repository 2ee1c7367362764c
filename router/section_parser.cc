#include "router/section_parser.h"

#include <cassert>
#include <string>

namespace reflect {

// A tag recognized in state `from`: it moves the parser to `to`, and its bytes belong to
// `section`.
struct SectionParser::TagRule {
  State from;
  std::string_view tag;
  State to;
  Section section;
};

std::span<const SectionParser::TagRule> SectionParser::TagRules() {
  // The grammar of the class comment, one row per recognized (state, tag).
  static constexpr TagRule kRules[] = {
      {State::kOutside, "<thinking>", State::kThinking, Section::kThinking},
      {State::kOutside, "<reflection>", State::kReflectionOutside, Section::kReflection},
      {State::kOutside, "<output>", State::kOutput, Section::kOutput},
      {State::kThinking, "<reflection>", State::kReflectionInThinking, Section::kReflection},
      {State::kThinking, "</thinking>", State::kOutside, Section::kThinking},
      {State::kThinking, "<output>", State::kOutput, Section::kOutput},
      {State::kReflectionInThinking, "</reflection>", State::kThinking, Section::kReflection},
      {State::kReflectionInThinking, "</thinking>", State::kOutside, Section::kThinking},
      {State::kReflectionInThinking, "<output>", State::kOutput, Section::kOutput},
      {State::kReflectionOutside, "</reflection>", State::kOutside, Section::kReflection},
      {State::kReflectionOutside, "<output>", State::kOutput, Section::kOutput},
      {State::kOutput, "</output>", State::kOutside, Section::kOutput},
  };
  return kRules;
}

std::string_view SectionName(Section section) {
  switch (section) {
    case Section::kThinking:
      return "thinking";
    case Section::kReflection:
      return "reflection";
    case Section::kOutput:
      return "output";
  }
  return "output";
}

SectionParser::SectionParser(SectionParserOptions options) : options_(options) {}

Section SectionParser::current_section() const {
  switch (state_) {
    case State::kThinking:
      return Section::kThinking;
    case State::kReflectionInThinking:
    case State::kReflectionOutside:
      return Section::kReflection;
    case State::kOutside:
    case State::kOutput:
      return Section::kOutput;
  }
  return Section::kOutput;
}

bool SectionParser::ThinkingBudgetExhausted(int64_t budget_tokens) const {
  const bool thinking_open = state_ == State::kThinking || state_ == State::kReflectionInThinking;
  return budget_tokens > 0 && thinking_open &&
         counts_.thinking_tokens + counts_.reflection_tokens >= budget_tokens;
}

std::vector<SectionPiece> SectionParser::PushToken(std::string_view text) {
  std::vector<SectionPiece> pieces;
  pushed_bytes_ += static_cast<int64_t>(text.size());
  pending_token_ends_.push_back(pushed_bytes_);
  Process(text, pieces);
  CountResolvedTokens();
  return pieces;
}

std::vector<SectionPiece> SectionParser::Finish() {
  std::vector<SectionPiece> pieces;
  const std::string held = std::move(held_);
  held_.clear();
  Resolve(held, static_cast<int64_t>(held.size()), current_section(), pieces);
  CountResolvedTokens();
  assert(pending_token_ends_.empty());
  return pieces;
}

void SectionParser::Process(std::string_view text, std::vector<SectionPiece>& pieces) {
  std::string joined;
  std::string_view buffer = text;
  if (!held_.empty()) {
    joined = std::move(held_);
    joined.append(text);
    buffer = joined;
  }
  held_.clear();
  size_t text_start = 0;  // first byte not yet resolved
  size_t scan = 0;        // where to look for the next '<'
  while (true) {
    const size_t bracket = buffer.find('<', scan);
    if (bracket == std::string_view::npos) break;
    const std::string_view remaining = buffer.substr(bracket);
    if (const TagRule* rule = MatchTag(remaining)) {
      const std::string_view before = buffer.substr(text_start, bracket - text_start);
      Resolve(before, static_cast<int64_t>(before.size()), current_section(), pieces);
      Resolve(options_.keep_tags ? rule->tag : std::string_view(),
              static_cast<int64_t>(rule->tag.size()), rule->section, pieces);
      if (rule->to == State::kReflectionInThinking || rule->to == State::kReflectionOutside) {
        ++counts_.reflections;
      }
      state_ = rule->to;
      text_start = scan = bracket + rule->tag.size();
      continue;
    }
    if (IsTagPrefix(remaining)) {
      const std::string_view before = buffer.substr(text_start, bracket - text_start);
      Resolve(before, static_cast<int64_t>(before.size()), current_section(), pieces);
      held_ = std::string(remaining);
      return;
    }
    scan = bracket + 1;
  }
  const std::string_view rest = buffer.substr(text_start);
  Resolve(rest, static_cast<int64_t>(rest.size()), current_section(), pieces);
}

void SectionParser::Resolve(std::string_view text, int64_t length, Section section,
                            std::vector<SectionPiece>& pieces) {
  if (length == 0) return;
  resolved_bytes_ += length;
  last_section_ = section;
  CountResolvedTokens();
  if (text.empty()) return;
  if (!pieces.empty() && pieces.back().section == section) {
    pieces.back().text.append(text);
  } else {
    pieces.push_back(SectionPiece{section, std::string(text)});
  }
}

void SectionParser::CountResolvedTokens() {
  while (!pending_token_ends_.empty() && pending_token_ends_.front() <= resolved_bytes_) {
    pending_token_ends_.pop_front();
    CountToken(last_section_);
  }
}

void SectionParser::CountToken(Section section) {
  switch (section) {
    case Section::kThinking:
      ++counts_.thinking_tokens;
      return;
    case Section::kReflection:
      ++counts_.reflection_tokens;
      return;
    case Section::kOutput:
      ++counts_.output_tokens;
      return;
  }
}

const SectionParser::TagRule* SectionParser::MatchTag(std::string_view remaining) const {
  for (const TagRule& rule : TagRules()) {
    if (rule.from == state_ && remaining.starts_with(rule.tag)) return &rule;
  }
  return nullptr;
}

bool SectionParser::IsTagPrefix(std::string_view candidate) const {
  for (const TagRule& rule : TagRules()) {
    if (rule.from == state_ && candidate.size() < rule.tag.size() &&
        rule.tag.starts_with(candidate)) {
      return true;
    }
  }
  return false;
}

}  // namespace reflect
