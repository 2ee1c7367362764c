// Early-return helpers for absl::Status / absl::StatusOr (this absl release ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define REFLECT_CONCAT_INNER(a, b) a##b
#define REFLECT_CONCAT(a, b) REFLECT_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define REFLECT_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status reflect_status_ = (expr);           \
    if (!reflect_status_.ok()) return reflect_status_; \
  } while (false)

// `REFLECT_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from an OK StatusOr, else returns.
#define REFLECT_ASSIGN_OR_RETURN(lhs, expr)                      \
  auto REFLECT_CONCAT(reflect_statusor_, __LINE__) = (expr);     \
  if (!REFLECT_CONCAT(reflect_statusor_, __LINE__).ok())         \
    return REFLECT_CONCAT(reflect_statusor_, __LINE__).status(); \
  lhs = std::move(*REFLECT_CONCAT(reflect_statusor_, __LINE__))
