#include "tests/support/prometheus_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"

namespace reflect::testing {
namespace {

bool IsNameCharacter(char character, bool first) {
  return std::isalpha(static_cast<unsigned char>(character)) || character == '_' ||
         character == ':' || (!first && std::isdigit(static_cast<unsigned char>(character)));
}

// Reads a metric or label name at the front of `rest`; empty when there is none.
std::string_view TakeName(std::string_view& rest) {
  size_t length = 0;
  while (length < rest.size() && IsNameCharacter(rest[length], length == 0)) ++length;
  std::string_view name = rest.substr(0, length);
  rest.remove_prefix(length);
  return name;
}

// Reads `{name="value",…}` (the braces included) into `labels`.
absl::Status TakeLabels(std::string_view& rest, std::map<std::string, std::string>& labels) {
  rest.remove_prefix(1);  // '{'
  while (!rest.empty() && rest.front() != '}') {
    const std::string_view name = TakeName(rest);
    if (name.empty() || rest.size() < 2 || rest[0] != '=' || rest[1] != '"') {
      return absl::InvalidArgumentError("bad label");
    }
    rest.remove_prefix(2);
    std::string value;
    for (;;) {
      if (rest.empty()) return absl::InvalidArgumentError("unterminated label value");
      const char character = rest.front();
      rest.remove_prefix(1);
      if (character == '"') break;
      if (character != '\\') {
        value.push_back(character);
        continue;
      }
      if (rest.empty()) return absl::InvalidArgumentError("bad escape");
      const char escaped = rest.front();
      rest.remove_prefix(1);
      if (escaped == 'n') {
        value.push_back('\n');
      } else if (escaped == '\\' || escaped == '"') {
        value.push_back(escaped);
      } else {
        return absl::InvalidArgumentError("bad escape");
      }
    }
    if (!labels.emplace(std::string(name), std::move(value)).second) {
      return absl::InvalidArgumentError("repeated label");
    }
    if (!rest.empty() && rest.front() == ',') rest.remove_prefix(1);
  }
  if (rest.empty()) return absl::InvalidArgumentError("unterminated labels");
  rest.remove_prefix(1);  // '}'
  return absl::OkStatus();
}

// A sample value: a float, "+Inf", "-Inf" or "NaN".
bool ParseValue(std::string_view text, double& value) {
  if (text.empty()) return false;
  const std::string copy(text);
  char* end = nullptr;
  value = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size();
}

std::string UrlEncode(std::string_view text) {
  std::string encoded;
  for (const char character : text) {
    if (std::isalnum(static_cast<unsigned char>(character)) || character == '-' ||
        character == '_' || character == '.' || character == '~') {
      encoded.push_back(character);
    } else {
      absl::StrAppendFormat(&encoded, "%%%02X", static_cast<unsigned char>(character));
    }
  }
  return encoded;
}

// A port nobody listens on now. Prometheus takes its listen address as a flag, so the port is
// chosen here and may, rarely, be taken before Prometheus binds it; Start retries then.
int FreePort() {
  const int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  int port = 0;
  socklen_t length = sizeof(address);
  if (bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(socket_fd);
  return port;
}

std::string Seconds(absl::Duration duration) {
  return absl::StrCat(absl::ToInt64Milliseconds(duration), "ms");
}

}  // namespace

std::vector<MetricSample> ParsedMetrics::Find(
    std::string_view name, const std::map<std::string, std::string>& labels) const {
  std::vector<MetricSample> found;
  for (const MetricSample& sample : samples) {
    if (sample.name != name) continue;
    bool matches = true;
    for (const auto& [label, value] : labels) {
      auto it = sample.labels.find(label);
      if (it == sample.labels.end() || it->second != value) {
        matches = false;
        break;
      }
    }
    if (matches) found.push_back(sample);
  }
  return found;
}

std::optional<double> ParsedMetrics::Value(std::string_view name,
                                           const std::map<std::string, std::string>& labels) const {
  std::vector<MetricSample> found = Find(name, labels);
  if (found.size() != 1) return std::nullopt;
  return found.front().value;
}

absl::StatusOr<ParsedMetrics> ParsePrometheusText(std::string_view text) {
  ParsedMetrics parsed;
  int line_number = 0;
  // Debian's Abseil has its own string_view, which StrSplit and StrCat take.
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics line ", line_number, ": ", what, ": \"", line, "\""));
    };
    if (line.empty()) continue;
    if (line.front() == '#') {
      std::vector<absl::string_view> words = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (words.size() >= 3 && (words[1] == "TYPE" || words[1] == "HELP")) {
        const std::string value = words.size() == 4 ? std::string(words[3]) : "";
        if (words[1] == "TYPE") {
          if (value != "counter" && value != "gauge" && value != "histogram" &&
              value != "summary" && value != "untyped") {
            return error("unknown type");
          }
          if (!parsed.types.emplace(std::string(words[2]), value).second) {
            return error("second TYPE for a family");
          }
        } else {
          parsed.help[std::string(words[2])] = value;
        }
      }
      continue;
    }
    MetricSample sample;
    std::string_view rest(line.data(), line.size());
    sample.name = std::string(TakeName(rest));
    if (sample.name.empty()) return error("no metric name");
    if (!rest.empty() && rest.front() == '{') {
      if (absl::Status status = TakeLabels(rest, sample.labels); !status.ok()) {
        return error(status.message());
      }
    }
    if (rest.empty() || rest.front() != ' ') return error("no value");
    std::vector<absl::string_view> fields =
        absl::StrSplit(absl::string_view(rest.data() + 1, rest.size() - 1), ' ');
    if (fields.empty() || fields.size() > 2 ||
        !ParseValue(std::string_view(fields[0].data(), fields[0].size()), sample.value)) {
      return error("bad value");
    }
    parsed.samples.push_back(std::move(sample));
  }
  return parsed;
}

absl::StatusOr<ParsedMetrics> ScrapeMetrics(const std::string& address, absl::Duration timeout) {
  const HttpReply reply = HttpCall(address, "GET", "/metrics", "", {}, timeout);
  if (reply.status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET http://", address, "/metrics answered ", reply.status));
  }
  return ParsePrometheusText(reply.body);
}

std::filesystem::path PrometheusBinary() {
  const char* configured = std::getenv("REFLECT_PROMETHEUS");
  return configured != nullptr && *configured != '\0'
             ? std::filesystem::path(configured)
             : std::filesystem::path("/usr/bin/prometheus");
}

absl::StatusOr<std::unique_ptr<PrometheusServer>> PrometheusServer::Start(
    const PrometheusServerOptions& options) {
  const std::filesystem::path binary = PrometheusBinary();
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the Prometheus server ", binary.string(),
                     " is missing: run tools/install-deps.sh (it installs Debian's prometheus "
                     "package)"));
  }
  if (options.targets.empty()) return absl::InvalidArgumentError("no scrape targets");

  const std::filesystem::path directory = MakeTestDirectory("prometheus");
  const std::filesystem::path config_path = directory / "prometheus.yml";
  {
    std::vector<std::string> quoted;
    for (const std::string& target : options.targets) quoted.push_back("'" + target + "'");
    std::ofstream config(config_path);
    // scrape_timeout may not exceed scrape_interval.
    config << "global:\n"
           << "  scrape_interval: " << Seconds(options.scrape_interval) << "\n"
           << "  scrape_timeout: " << Seconds(options.scrape_interval) << "\n"
           << "  evaluation_interval: " << Seconds(options.scrape_interval) << "\n"
           << "scrape_configs:\n"
           << "  - job_name: '" << options.job_name << "'\n"
           << "    static_configs:\n"
           << "      - targets: [" << absl::StrJoin(quoted, ", ") << "]\n";
    if (!config) return absl::InternalError("cannot write " + config_path.string());
  }

  std::string last_failure = "no attempt";
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int port = FreePort();
    if (port == 0) return absl::InternalError("no free port");
    const std::string address = absl::StrCat("127.0.0.1:", port);
    const std::filesystem::path storage = directory / absl::StrCat("data-", attempt);
    auto process = std::make_unique<ChildProcess>(
        std::vector<std::string>{binary.string(), "--config.file=" + config_path.string(),
                                 "--storage.tsdb.path=" + storage.string(),
                                 "--web.listen-address=" + address, "--log.level=warn"});
    const absl::Time deadline = absl::Now() + options.ready_timeout;
    while (absl::Now() < deadline && process->running()) {
      const HttpReply reply = HttpCall(address, "GET", "/-/ready", "", {}, absl::Seconds(2));
      if (reply.status == 200) {
        return std::unique_ptr<PrometheusServer>(new PrometheusServer(std::move(process), address));
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    last_failure = process->running() ? "not ready in time" : "exited (see its log above)";
  }
  return absl::UnavailableError(
      absl::StrCat("Prometheus did not start: ", last_failure, "; config ", config_path.string()));
}

PrometheusServer::PrometheusServer(std::unique_ptr<ChildProcess> process, std::string address)
    : process_(std::move(process)), address_(std::move(address)) {}

absl::StatusOr<nlohmann::json> PrometheusServer::GetData(const std::string& path_and_query) {
  const HttpReply reply = HttpCall(address_, "GET", path_and_query, "", {}, absl::Seconds(10));
  if (reply.status == 0) {
    return absl::UnavailableError(absl::StrCat("no answer from Prometheus at ", address_));
  }
  nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return absl::InternalError(
        absl::StrCat("Prometheus answered ", reply.status, ": ", reply.body));
  }
  if (body.value("status", "") != "success") {
    return absl::InvalidArgumentError(absl::StrCat("Prometheus answered ", reply.status, ": ",
                                                   body.value("errorType", ""), ": ",
                                                   body.value("error", "")));
  }
  return body["data"];
}

absl::StatusOr<nlohmann::json> PrometheusServer::Query(const std::string& promql) {
  return GetData("/api/v1/query?query=" + UrlEncode(promql));
}

absl::StatusOr<nlohmann::json> PrometheusServer::WaitForResult(const std::string& promql,
                                                               absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<nlohmann::json> data;
  do {
    data = Query(promql);
    if (!data.ok()) return data;
    const nlohmann::json& result = (*data)["result"];
    if (result.is_array() && !result.empty()) return data;
    absl::SleepFor(absl::Milliseconds(250));
  } while (absl::Now() < deadline);
  return absl::DeadlineExceededError(absl::StrCat("no result for ", promql, " within ",
                                                  absl::FormatDuration(timeout), "; last reply ",
                                                  data->dump()));
}

absl::StatusOr<nlohmann::json> PrometheusServer::Targets() { return GetData("/api/v1/targets"); }

std::vector<double> VectorValues(const nlohmann::json& data) {
  std::vector<double> values;
  if (!data.contains("result") || !data["result"].is_array()) return values;
  for (const nlohmann::json& entry : data["result"]) {
    // An instant vector's value is [<unix time>, "<number>"]; the number is a string so that
    // NaN and ±Inf survive JSON.
    if (entry.contains("value") && entry["value"].is_array() && entry["value"].size() == 2) {
      values.push_back(std::strtod(entry["value"][1].get<std::string>().c_str(), nullptr));
    }
  }
  return values;
}

}  // namespace reflect::testing
