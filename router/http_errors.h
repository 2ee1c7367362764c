// absl::Status at the HTTP edge: the status code mapping, OpenAI-style error bodies, and the two
// status payloads the router attaches to errors (the offending request field and a retry hint).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "router/http_message.h"

namespace reflect {

// INVALID_ARGUMENT "<field>: <reason>", carrying `field` (a JSON path such as "messages[2].role")
// as the OpenAI error's "param".
absl::Status InvalidFieldError(std::string_view field, std::string_view reason);

// `code` "<field>: <reason>" carrying `field` as "param" (e.g. NOT_FOUND for an unknown model).
absl::Status FieldError(absl::StatusCode code, std::string_view field, std::string_view reason);

// The field attached by InvalidFieldError or FieldError, if any.
std::optional<std::string> ErrorField(const absl::Status& status);

// Attaches a retry hint to `status` (normally RESOURCE_EXHAUSTED from admission). HTTP sends it as
// `Retry-After` in whole seconds (rounded up, at least 1); gRPC as `retry-after-ms` metadata.
void SetRetryAfter(std::chrono::milliseconds delay, absl::Status& status);

// The hint attached by SetRetryAfter, if any.
std::optional<std::chrono::milliseconds> RetryAfter(const absl::Status& status);

// The HTTP status for an absl code: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE 400;
// UNAUTHENTICATED 401; PERMISSION_DENIED 403; NOT_FOUND 404; ALREADY_EXISTS, ABORTED 409;
// RESOURCE_EXHAUSTED 429; CANCELLED 499; UNIMPLEMENTED 501; UNAVAILABLE 503;
// DEADLINE_EXCEEDED 504; everything else (INTERNAL, UNKNOWN, DATA_LOSS) 500.
int HttpStatusFromCode(absl::StatusCode code);

// The OpenAI error object for `status` as compact JSON:
//   {"error": {"message": …, "type": …, "param": <field or null>, "code": <"invalid_argument"…>}}
// `type` follows OpenAI's families ("invalid_request_error", "authentication_error",
// "permission_error", "not_found_error", "rate_limit_error", "server_error",
// "service_unavailable_error", "timeout_error", "cancelled_error").
std::string ErrorBody(const absl::Status& status);

// A full JSON error response for `status`, with Retry-After when a hint is attached.
HttpResponse ErrorResponse(const absl::Status& status);

// An error response whose HTTP status has no absl code of its own (405, 413, 431): the body is the
// OpenAI error object with type "invalid_request_error" and the given code string.
HttpResponse HttpErrorResponse(int http_status, std::string_view code, std::string_view message);

}  // namespace reflect
