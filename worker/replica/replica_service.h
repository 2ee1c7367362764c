// ReplicaService: reflect.internal.v1.Replica on gRPC's callback API (DESIGN §1, §8, §11) — the
// edge between the router's streams and the EngineLoop.
//
// Generate: the first message's `start` becomes EngineLoop::Submit; `force` becomes
// EngineLoop::Force; the RPC being cancelled (client gone, deadline) or a failed write becomes
// EngineLoop::Cancel. Engine events arrive on the engine thread and are queued in the stream's
// reactor, which keeps one Write outstanding and packs the tokens that piled up meanwhile into
// one message. No reaction blocks: each does a queue push or a short locked update.
//
// GetLoad answers from EngineLoop::Load (a locked copy) and EngineLoop::PrefixCacheSummary (a
// shared pointer to an immutable filter, copied into the reply here), never waiting for a step.
// prefix_cache is left unset (hash_function UNSPECIFIED) when the engine keeps no summary.
//
// Before SetEngine (weights loading) Generate answers UNAVAILABLE and GetLoad reports
// accepting = false.
//
// Ownership: does not own the engine; the engine must outlive the server's shutdown.
// Thread-safety: all methods may be called from any thread. Cost: per token, one queue push on
// the engine thread and at most one Write.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include "reflect/internal/v1/replica.grpc.pb.h"
#include "worker/engine_loop.h"

namespace reflect {

class ReplicaService final : public internal::v1::Replica::CallbackService {
 public:
  // `model`: the served model's name, reported by GetLoad.
  explicit ReplicaService(std::string model) : model_(std::move(model)) {}

  // Starts serving requests with `engine` (once weights are loaded); `replica_id` is reported
  // by GetLoad (known only once the server listens, with port 0).
  void SetEngine(EngineLoop* engine, std::string replica_id);

  grpc::ServerBidiReactor<internal::v1::GenerateRequest, internal::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const internal::v1::GetLoadRequest* request,
                                    internal::v1::LoadReport* report) override;

 private:
  const std::string model_;
  std::mutex mutex_;
  std::string replica_id_;  // guarded by mutex_
  std::atomic<EngineLoop*> engine_{nullptr};
};

}  // namespace reflect
