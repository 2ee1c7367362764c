// The OpenAI-compatible HTTP routes of reflect-router (docs/http-api.md, DESIGN §8) on HttpServer,
// in front of the RequestRouter:
//
//   POST /v1/chat/completions, POST /v1/completions — parsed and validated by
//     ParseCompletionRequest, tokenized (chat: the Llama 3.1 template), one RoutedRequest per
//     choice (n per prompt, every prompt of a batch), merged into one response (non-streaming) or
//     one SSE stream whose chunks carry each choice's index. Chat in the full trace mode puts
//     THINKING and REFLECTION text in `reasoning_content`, OUTPUT in `content`; usage counts
//     tokens per section. The client going away cancels every routed request of the exchange.
//   GET /v1/models — the served names (ModelListJson).
//   GET /healthz, GET /readyz (RegisterHealthRoutes, public): the process is up; a replica is in
//     rotation (200) or none is (503).
//
// Choice seeds: a request's seed (given, or chosen by the server) is the seed of choice 0 of each
// prompt; choice j uses seed + j, so the n choices differ and the request still replays exactly.
//
// Ownership: the handlers share the router, tokenizer and metrics by reference; all must outlive
// the server. Thread-safety: handlers run on the server's I/O threads and never block (Submit
// answers at once); router output arrives on router threads and is written through the
// thread-safe writer, in order, under one lock per exchange. Cost per request: one tokenization
// per prompt and one Submit per choice; per streamed piece, one SSE event.
#pragma once

#include <cstdint>

#include "common/tokenizer.h"
#include "router/http_server.h"
#include "router/openai_protocol.h"
#include "router/request_router.h"

namespace reflect {

class RouterMetrics;

struct OpenAiRoutesOptions {
  OpenAiLimits limits;               // served names, context length, vocabulary, bounds
  int64_t created_unix_seconds = 0;  // the models' "created" in /v1/models (e.g. start time)
};

// Adds the three API routes to `server` (before Start), authenticated when the server has keys.
// `metrics` may be null; when set, refused requests are counted (invalid_request, not_found).
void RegisterOpenAiRoutes(HttpServer& server, RequestRouter& router, const Tokenizer& tokenizer,
                          OpenAiRoutesOptions options, RouterMetrics* metrics);

// Adds GET /healthz and GET /readyz, public (no API key: probes carry none).
void RegisterHealthRoutes(HttpServer& server, RequestRouter& router);

}  // namespace reflect
