// The banner `reflect serve` prints once the cluster is ready: where it listens and commands to
// paste (grpcurl, curl, the OpenAI Python client).
#pragma once

#include <string>

namespace reflect::cli {

std::string ServeExamples(const std::string& host, int grpc_port, int http_port,
                          const std::string& model_name);

}  // namespace reflect::cli
