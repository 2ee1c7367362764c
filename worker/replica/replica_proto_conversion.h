// reflect.internal.v1 ↔ the engine's plain structs (DESIGN §3: protobuf only at the edges). Pure
// functions; no gRPC calls, no threads.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/prefix_summary.h"
#include "grpcpp/support/status.h"
#include "reflect/internal/v1/replica.pb.h"
#include "worker/engine_loop.h"
#include "worker/generation_sink.h"

namespace reflect {

// The engine request of a stream's `start` message. The deadline is `receipt_time` plus
// start.timeout (none when unset). INVALID_ARGUMENT for what the proto allows but the engine
// cannot take (negative max_tokens or timeout, logprobs outside [0, 20]); the engine checks the
// token ids against its vocabulary.
absl::StatusOr<EngineRequest> EngineRequestFromProto(const internal::v1::StartGeneration& start,
                                                     absl::Time receipt_time);

internal::v1::FinishReason FinishReasonToProto(StopReason reason);

// Appends one generated token to `response`: its id and, when asked for, its logprob and one
// TopLogprobs entry with its alternatives (empty for a forced token).
void AppendToken(const GeneratedToken& token, bool with_logprobs,
                 internal::v1::GenerateResponse& response);

void SetFinish(const GenerationSummary& summary, internal::v1::GenerateResponse& response);

internal::v1::LoadReport LoadReportFromEngine(const EngineLoad& load, std::string_view replica_id,
                                              std::string_view model);

// Fills `proto` from the engine's summary. The hash function is FNV1A_64_CHAINED because that is
// what common/block_hash.h computes for the prefix cache itself. Copies the bits (64 KiB by
// default): one copy per GetLoad.
void PrefixCacheSummaryToProto(const PrefixSummary& summary,
                               internal::v1::PrefixCacheSummary& proto);

// Same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace reflect
