#include "router/stop_matcher.h"

#include <algorithm>
#include <numeric>

namespace reflect {

namespace {

uint64_t EdgeKey(int32_t node, uint8_t byte) { return (static_cast<uint64_t>(node) << 8) | byte; }

}  // namespace

StopMatcher::StopMatcher(const std::vector<std::string>& stop_strings) {
  // The trie, remembering how each node was reached to compute failure links afterwards.
  nodes_.emplace_back();
  std::vector<int32_t> parents = {0};
  std::vector<uint8_t> bytes = {0};
  for (size_t index = 0; index < stop_strings.size(); ++index) {
    const std::string& stop = stop_strings[index];
    if (stop.empty()) continue;
    int32_t node = 0;
    for (const char character : stop) {
      const uint8_t byte = static_cast<uint8_t>(character);
      const auto [edge, inserted] =
          children_.try_emplace(EdgeKey(node, byte), static_cast<int32_t>(nodes_.size()));
      if (inserted) {
        Node child;
        child.depth = nodes_[node].depth + 1;
        nodes_.push_back(child);
        parents.push_back(node);
        bytes.push_back(byte);
      }
      node = edge->second;
    }
    if (nodes_[node].match_index < 0) {
      nodes_[node].match_length = nodes_[node].depth;
      nodes_[node].match_index = static_cast<int32_t>(index);
    }
  }

  // Failure links in order of depth: a node's failure is one level shallower than the node.
  std::vector<int32_t> order(nodes_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [this](int32_t a, int32_t b) { return nodes_[a].depth < nodes_[b].depth; });
  for (const int32_t node : order) {
    if (nodes_[node].depth <= 1) continue;  // the root and its children fail to the root
    int32_t fallback = nodes_[parents[node]].failure;
    while (fallback != 0 && Child(fallback, bytes[node]) < 0) fallback = nodes_[fallback].failure;
    const int32_t target = Child(fallback, bytes[node]);
    nodes_[node].failure = target >= 0 ? target : 0;
    // A stop string ending at the failure node ends here too; keep the longest.
    const Node& failure = nodes_[nodes_[node].failure];
    if (failure.match_length > nodes_[node].match_length) {
      nodes_[node].match_length = failure.match_length;
      nodes_[node].match_index = failure.match_index;
    }
  }
}

int32_t StopMatcher::Child(int32_t node, uint8_t byte) const {
  const auto edge = children_.find(EdgeKey(node, byte));
  return edge == children_.end() ? -1 : edge->second;
}

int32_t StopMatcher::Step(int32_t node, uint8_t byte) const {
  while (true) {
    const int32_t child = Child(node, byte);
    if (child >= 0) return child;
    if (node == 0) return 0;
    node = nodes_[node].failure;
  }
}

StopMatcherResult StopMatcher::Push(std::string_view text) {
  StopMatcherResult result;
  if (stopped_) return result;
  std::string stream = std::move(held_);
  held_.clear();
  stream.append(text);
  // held_ was the stream's last depth(node_) bytes, so the automaton resumes at node_ with the new
  // bytes; everything before the suffix held back at the end is final.
  const size_t first_new = stream.size() - text.size();
  for (size_t position = first_new; position < stream.size(); ++position) {
    node_ = Step(node_, static_cast<uint8_t>(stream[position]));
    const Node& node = nodes_[node_];
    if (node.match_length > 0) {
      stopped_ = true;
      result.match = StopMatch{static_cast<size_t>(node.match_index)};
      result.text = stream.substr(0, position + 1 - static_cast<size_t>(node.match_length));
      return result;
    }
  }
  const size_t held_length = static_cast<size_t>(nodes_[node_].depth);
  result.text = stream.substr(0, stream.size() - held_length);
  held_ = stream.substr(stream.size() - held_length);
  return result;
}

std::string StopMatcher::Flush() {
  std::string held = std::move(held_);
  held_.clear();
  node_ = 0;
  return held;
}

}  // namespace reflect
