#include "tests/support/router_over_worker.h"

#include "absl/time/time.h"
#include "tests/support/test_paths.h"

namespace reflect::testing {

absl::StatusOr<std::unique_ptr<RouterOverWorker>> StartRouterOverWorker() {
  auto started = std::make_unique<RouterOverWorker>();
  started->worker = std::make_unique<WorkerProcess>(TestModelPath("tiny").string());
  if (started->worker->address().empty()) {
    return absl::UnavailableError("reflect-worker did not start");
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(TestModelPath("tiny"));
  if (!tokenizer.ok()) return tokenizer.status();
  started->tokenizer = *std::move(tokenizer);
  RequestRouterOptions options;
  options.replica_addresses = {started->worker->address()};
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(options, *started->tokenizer, nullptr);
  if (!router.ok()) return router.status();
  started->router = *std::move(router);
  if (!started->router->WaitUntilReady(absl::Seconds(60))) {
    return absl::UnavailableError("the router had no replica in rotation within 60 s");
  }
  return started;
}

}  // namespace reflect::testing
