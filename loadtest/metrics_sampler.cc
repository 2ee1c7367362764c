#include "loadtest/metrics_sampler.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace reflect::loadtest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

bool IsNameCharacter(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == ':';
}

// The position just past the label set that starts at text[start] == '{', or npos.
size_t SkipLabels(std::string_view line, size_t start) {
  bool quoted = false;
  for (size_t i = start + 1; i < line.size(); ++i) {
    if (quoted && line[i] == '\\') {
      ++i;
    } else if (line[i] == '"') {
      quoted = !quoted;
    } else if (!quoted && line[i] == '}') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// The value of a sample line named `name`, or nullopt for any other line.
std::optional<double> SampleValue(std::string_view line, std::string_view name) {
  if (!line.starts_with(name)) return std::nullopt;
  size_t position = name.size();
  if (position < line.size() && IsNameCharacter(line[position])) return std::nullopt;
  if (position < line.size() && line[position] == '{') position = SkipLabels(line, position);
  if (position == std::string_view::npos) return std::nullopt;
  const std::string rest(line.substr(position));
  char* end = nullptr;
  const double value = std::strtod(rest.c_str(), &end);
  if (end == rest.c_str()) return std::nullopt;
  return value;
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& target,
                                    absl::Duration timeout) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(address, ": not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  asio::io_context io_context;
  asio::ip::tcp::resolver resolver(io_context);
  error_code error;
  const auto endpoints = resolver.resolve(host, address.substr(colon + 1), error);
  if (error) return absl::UnavailableError(absl::StrCat(address, ": ", error.message()));

  beast::tcp_stream stream(io_context);
  stream.expires_after(absl::ToChronoMilliseconds(timeout));
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, address);
  request.set(http::field::connection, "close");
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  stream.async_connect(endpoints, [&](error_code connect_error, const auto&) {
    if (connect_error) {
      error = connect_error;
      return;
    }
    http::async_write(stream, request, [&](error_code write_error, size_t) {
      if (write_error) {
        error = write_error;
        return;
      }
      http::async_read(stream, buffer, response,
                       [&](error_code read_error, size_t) { error = read_error; });
    });
  });
  io_context.run();
  if (error) return absl::UnavailableError(absl::StrCat(address, target, ": ", error.message()));
  if (response.result() != http::status::ok) {
    return absl::UnavailableError(absl::StrCat(address, target, ": HTTP ", response.result_int()));
  }
  return std::move(response.body());
}

std::optional<double> PrometheusValue(std::string_view text, std::string_view name) {
  std::optional<double> sum;
  while (!text.empty()) {
    const size_t newline = text.find('\n');
    const std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    if (const std::optional<double> value = SampleValue(line, name)) sum = sum.value_or(0) + *value;
  }
  return sum;
}

MetricsSampler::MetricsSampler(MetricsSamplerOptions options, absl::Time run_start)
    : options_(std::move(options)), run_start_(run_start), thread_([this] { Loop(); }) {}

MetricsSampler::~MetricsSampler() { Stop(); }

void MetricsSampler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<ServerSample> MetricsSampler::samples() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return samples_;
}

int64_t MetricsSampler::failures() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failures_;
}

std::string MetricsSampler::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_error_;
}

void MetricsSampler::Loop() {
  absl::Time due = run_start_;
  while (true) {
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait_until(lock, absl::ToChronoTime(due), [&] { return stopping_; });
    if (stopping_) return;
    lock.unlock();
    std::optional<ServerSample> sample = Scrape();
    lock.lock();
    if (sample) samples_.push_back(*sample);
    // The next tick still ahead: a slow scrape skips ticks rather than bunching them.
    absl::Duration remainder;
    const int64_t ticks_past =
        absl::IDivDuration(absl::Now() - run_start_, options_.interval, &remainder);
    due = run_start_ + (ticks_past + 1) * options_.interval;
  }
}

std::optional<ServerSample> MetricsSampler::Scrape() {
  ServerSample sample;
  sample.at = absl::Now() - run_start_;
  absl::StatusOr<std::string> router =
      HttpGet(options_.router_address, "/metrics", options_.scrape_timeout);
  if (!router.ok()) {
    RecordFailure(router.status());
    return std::nullopt;
  }
  sample.queued_requests = PrometheusValue(*router, "reflect_num_requests_waiting").value_or(0);
  sample.running_requests = PrometheusValue(*router, "reflect_num_requests_running").value_or(0);
  if (std::optional<double> usage = PrometheusValue(*router, "reflect_kv_cache_usage_ratio")) {
    sample.kv_cache_usage_ratio = *usage;
    return sample;
  }
  double usage_sum = 0;
  int reporting = 0;
  for (const std::string& address : options_.replica_addresses) {
    absl::StatusOr<std::string> replica = HttpGet(address, "/metrics", options_.scrape_timeout);
    if (!replica.ok()) {
      RecordFailure(replica.status());
      continue;
    }
    if (std::optional<double> usage = PrometheusValue(*replica, "reflect_kv_cache_usage_ratio")) {
      usage_sum += *usage;
      ++reporting;
    }
  }
  if (reporting > 0) sample.kv_cache_usage_ratio = usage_sum / reporting;
  return sample;
}

void MetricsSampler::RecordFailure(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++failures_;
  last_error_ = std::string(status.message());
}

}  // namespace reflect::loadtest
