// A real reflect-worker on the tiny test model with an in-process RequestRouter in front of it and
// the model's tokenizer: what the router front-end tests (gRPC service, OpenAI routes) serve from.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/tokenizer.h"
#include "router/request_router.h"
#include "tests/support/child_process.h"

namespace reflect::testing {

// Members are destroyed router first, then tokenizer, then the worker process.
struct RouterOverWorker {
  std::unique_ptr<WorkerProcess> worker;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<RequestRouter> router;
};

// Starts the worker (default test flags) and the router, and waits until the router is ready;
// UNAVAILABLE when the worker does not start or the router is not ready within 60 s.
absl::StatusOr<std::unique_ptr<RouterOverWorker>> StartRouterOverWorker();

}  // namespace reflect::testing
