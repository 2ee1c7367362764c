#include "worker/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/sampler.h"

namespace reflect {

absl::Status CheckSamplingRows(const StepPlan& plan, std::span<const SamplingRow> rows) {
  const int64_t logit_rows = std::ranges::count_if(
      plan.sequences, [](const ScheduledSequence& sequence) { return sequence.needs_logits; });
  if (logit_rows == std::ssize(rows)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "ForwardAndSample: ", rows.size(), " sampling rows for ", logit_rows, " logits rows"));
}

absl::Status Backend::ForwardAndSample(const StepPlan& plan, std::span<const SamplingRow> rows,
                                       std::vector<SampledToken>& tokens) {
  tokens.clear();
  if (absl::Status status = CheckSamplingRows(plan, rows); !status.ok()) return status;
  const int64_t logit_rows = std::ssize(rows);
  if (absl::Status status = Forward(plan, host_logits_); !status.ok()) return status;
  const int64_t vocabulary = vocab_size();
  if (std::ssize(host_logits_) != logit_rows * vocabulary) {
    return absl::InternalError(absl::StrCat("the backend returned ", host_logits_.size(),
                                            " logits for ", logit_rows, " rows"));
  }
  tokens.reserve(rows.size());
  for (size_t row = 0; row < rows.size(); ++row) {
    const SamplingRow& sampling = rows[row];
    const std::span<float> row_logits(host_logits_.data() + row * vocabulary,
                                      static_cast<size_t>(vocabulary));
    SampledToken& token =
        tokens.emplace_back(SampleToken(row_logits, *sampling.params, sampling.prompt_ids,
                                        sampling.generated_ids, sampling.position));
    token.sequence_id = sampling.sequence_id;
  }
  return absl::OkStatus();
}

}  // namespace reflect
