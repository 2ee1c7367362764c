// A small blocking HTTP/1.1 client for tests that talk to real servers on loopback (the router's
// OpenAI API, /metrics, Prometheus): one request per connection ("Connection: close"), chunked
// bodies decoded, server-sent events split into their `data:` payloads.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reflect::testing {

struct HttpReply {
  int status = 0;                              // 0: no answer (connect failed, timeout)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
  absl::Duration elapsed;                      // from connect to the last byte
  absl::Duration time_to_first_byte;
};

// `address` is "host:port". `headers` are extra "Name: value" lines.
HttpReply HttpCall(const std::string& address, const std::string& method, const std::string& path,
                   const std::string& body = "", const std::vector<std::string>& headers = {},
                   absl::Duration timeout = absl::Seconds(120));

// The `data:` payloads of a text/event-stream body, in order ("[DONE]" included).
std::vector<std::string> SseData(const std::string& body);

}  // namespace reflect::testing
