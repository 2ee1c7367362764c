// grpc.health.v1 checks for tests: what a server says of a service, and waiting until it says so.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/channel.h"

namespace reflect::testing {

using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

// One Check of `service` ("" = the whole server) on `channel`, with a 2 s deadline; UNKNOWN when
// the call fails.
ServingStatus HealthStatus(grpc::Channel& channel, const std::string& service);

// Polls HealthStatus every 50 ms until it is `wanted`; false when `timeout` passes first.
bool WaitForHealth(grpc::Channel& channel, const std::string& service, ServingStatus wanted,
                   absl::Duration timeout = absl::Seconds(60));

}  // namespace reflect::testing
