// Plain HTTP request and response values exchanged between HttpServer and its handlers.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace reflect {

struct HttpHeader {
  std::string name;  // lower-case in requests; as written in responses
  std::string value;
};

// One request, fully read (body included) before the handler sees it.
struct HttpRequest {
  std::string method;               // "GET", "POST", …
  std::string target;               // as sent: path and query
  std::string path;                 // target up to the first '?'
  std::string query;                // target after the first '?' (without it); empty when none
  int version = 11;                 // 10: HTTP/1.0, 11: HTTP/1.1
  std::vector<HttpHeader> headers;  // in arrival order
  std::string body;
  std::string remote_address;  // "ip:port" of the client

  // The value of the first header named `name` (case-insensitive), if any.
  std::optional<std::string_view> Header(std::string_view name) const;
};

// One full response. The server adds Content-Length, Connection, Date and Server itself.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<HttpHeader> headers;  // extra headers (Retry-After, Allow, …)
  std::string body;
};

}  // namespace reflect
