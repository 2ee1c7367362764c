#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace reflect::testing {
namespace {

int Connect(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return -1;
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port)) return -1;
  sockaddr_in socket_address{};
  socket_address.sin_family = AF_INET;
  socket_address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &socket_address.sin_addr) != 1) {
    return -1;
  }
  const int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(socket_fd, reinterpret_cast<sockaddr*>(&socket_address), sizeof(socket_address)) !=
      0) {
    close(socket_fd);
    return -1;
  }
  return socket_fd;
}

// Decodes a chunked body; returns what it could when the body is cut short.
std::string Dechunk(std::string_view body) {
  std::string out;
  while (!body.empty()) {
    const size_t line_end = body.find("\r\n");
    if (line_end == std::string_view::npos) break;
    const size_t size = std::strtoul(std::string(body.substr(0, line_end)).c_str(), nullptr, 16);
    body.remove_prefix(line_end + 2);
    if (size == 0 || body.size() < size) break;
    out.append(body.substr(0, size));
    body.remove_prefix(std::min(body.size(), size + 2));
  }
  return out;
}

}  // namespace

HttpReply HttpCall(const std::string& address, const std::string& method, const std::string& path,
                   const std::string& body, const std::vector<std::string>& headers,
                   absl::Duration timeout) {
  HttpReply reply;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  const int socket_fd = Connect(address);
  if (socket_fd < 0) return reply;
  std::string request =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: ", address, "\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST") {
    absl::StrAppend(&request, "Content-Type: application/json\r\nContent-Length: ", body.size(),
                    "\r\n");
  }
  for (const std::string& header : headers) absl::StrAppend(&request, header, "\r\n");
  absl::StrAppend(&request, "\r\n", body);
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t bytes = send(socket_fd, request.data() + sent, request.size() - sent, 0);
    if (bytes <= 0) break;
    sent += static_cast<size_t>(bytes);
  }
  std::string raw;
  bool first_byte = false;
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    pollfd descriptor{.fd = socket_fd, .events = POLLIN, .revents = 0};
    if (poll(&descriptor, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) break;
    char buffer[16384];
    const ssize_t bytes = recv(socket_fd, buffer, sizeof(buffer), 0);
    if (bytes <= 0) break;
    if (!first_byte) {
      reply.time_to_first_byte = absl::Now() - start;
      first_byte = true;
    }
    raw.append(buffer, static_cast<size_t>(bytes));
  }
  close(socket_fd);
  reply.elapsed = absl::Now() - start;
  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos || raw.size() < 12) return reply;
  std::vector<std::string> lines = absl::StrSplit(raw.substr(0, header_end), "\r\n");
  if (!absl::SimpleAtoi(lines[0].substr(9, 3), &reply.status)) return reply;
  for (size_t index = 1; index < lines.size(); ++index) {
    const size_t colon = lines[index].find(':');
    if (colon == std::string::npos) continue;
    reply.headers[absl::AsciiStrToLower(lines[index].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[index].substr(colon + 1)));
  }
  const std::string_view rest = std::string_view(raw).substr(header_end + 4);
  reply.body = reply.headers["transfer-encoding"] == "chunked" ? Dechunk(rest) : std::string(rest);
  return reply;
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> data;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(body, '\n'))) {
    if (line.starts_with("data: ")) data.push_back(line.substr(6));
  }
  return data;
}

}  // namespace reflect::testing
