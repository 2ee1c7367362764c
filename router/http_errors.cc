#include "router/http_errors.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

constexpr absl::string_view kFieldPayload = "reflect/field";
constexpr absl::string_view kRetryAfterPayload = "reflect/retry-after-ms";

// This absl build has its own string_view type.
absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

std::string_view ErrorType(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 499:
      return "cancelled_error";
    case 503:
      return "service_unavailable_error";
    case 504:
      return "timeout_error";
    default:
      return http_status < 500 ? "invalid_request_error" : "server_error";
  }
}

std::string ErrorJson(std::string_view message, std::string_view type,
                      const std::optional<std::string>& param, std::string_view code) {
  nlohmann::json error = {{"message", message},
                          {"type", type},
                          {"param", param ? nlohmann::json(*param) : nlohmann::json(nullptr)},
                          {"code", code}};
  return nlohmann::json{{"error", std::move(error)}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

}  // namespace

absl::Status InvalidFieldError(std::string_view field, std::string_view reason) {
  return FieldError(absl::StatusCode::kInvalidArgument, field, reason);
}

absl::Status FieldError(absl::StatusCode code, std::string_view field, std::string_view reason) {
  absl::Status status(code, absl::StrCat(Absl(field), ": ", Absl(reason)));
  status.SetPayload(kFieldPayload, absl::Cord(Absl(field)));
  return status;
}

std::optional<std::string> ErrorField(const absl::Status& status) {
  const auto field = status.GetPayload(kFieldPayload);
  if (!field) return std::nullopt;
  return std::string(*field);
}

void SetRetryAfter(std::chrono::milliseconds delay, absl::Status& status) {
  status.SetPayload(kRetryAfterPayload, absl::Cord(absl::StrCat(delay.count())));
}

std::optional<std::chrono::milliseconds> RetryAfter(const absl::Status& status) {
  const auto payload = status.GetPayload(kRetryAfterPayload);
  int64_t milliseconds = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &milliseconds)) return std::nullopt;
  return std::chrono::milliseconds(milliseconds);
}

int HttpStatusFromCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorBody(const absl::Status& status) {
  const int http_status = HttpStatusFromCode(status.code());
  return ErrorJson(std::string(status.message()), ErrorType(http_status), ErrorField(status),
                   absl::AsciiStrToLower(absl::StatusCodeToString(status.code())));
}

HttpResponse ErrorResponse(const absl::Status& status) {
  HttpResponse response;
  response.status = HttpStatusFromCode(status.code());
  response.body = ErrorBody(status);
  if (std::optional<std::chrono::milliseconds> delay = RetryAfter(status)) {
    const int64_t seconds = std::max<int64_t>(1, (delay->count() + 999) / 1000);
    response.headers.push_back({"Retry-After", absl::StrCat(seconds)});
  }
  return response;
}

HttpResponse HttpErrorResponse(int http_status, std::string_view code, std::string_view message) {
  HttpResponse response;
  response.status = http_status;
  response.body = ErrorJson(message, ErrorType(http_status), std::nullopt, code);
  return response;
}

}  // namespace reflect
