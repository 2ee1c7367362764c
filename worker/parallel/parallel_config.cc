#include "worker/parallel/parallel_config.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/parallel/socket_io.h"

namespace reflect {
namespace {

absl::StatusOr<int> IntegerVariable(const EnvironmentLookup& environment, const std::string& name) {
  const std::optional<std::string> value = environment(name);
  if (!value.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not set (LWS_LEADER_ADDRESS is: a LeaderWorkerSet pod has both)", name));
  }
  int number = 0;
  if (!absl::SimpleAtoi(*value, &number) || number < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s='%s' is not a non-negative integer", name, *value));
  }
  return number;
}

absl::Status CheckFlags(const ParallelFlags& flags) {
  if (flags.tensor_parallel < 1 || flags.pipeline_parallel < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--tensor_parallel %d and --pipeline_parallel %d must be at least 1",
                        flags.tensor_parallel, flags.pipeline_parallel));
  }
  if (flags.ranks_per_pod < 1 || flags.local_rank < 0 || flags.local_rank >= flags.ranks_per_pod) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--local_rank %d must be in [0, --ranks_per_pod %d)", flags.local_rank,
                        flags.ranks_per_pod));
  }
  if (flags.rendezvous_port < 1 || flags.rendezvous_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--rendezvous_port %d is not in 1-65535", flags.rendezvous_port));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParallelConfig> ResolveParallelConfig(const ParallelFlags& flags,
                                                     const EnvironmentLookup& environment) {
  REFLECT_RETURN_IF_ERROR(CheckFlags(flags));
  ParallelConfig config;
  config.layout.tensor_parallel = flags.tensor_parallel;
  config.layout.pipeline_parallel = flags.pipeline_parallel;
  config.join_timeout = flags.join_timeout;
  REFLECT_ASSIGN_OR_RETURN(config.tensor_kind, ParseCommunicatorKind(flags.tensor_communicator));
  const int world_size = config.layout.world_size();

  if (flags.rank >= 0 || !flags.leader_address.empty()) {
    if (flags.rank < 0 || flags.rank >= world_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--rank %d must be in [0, tensor_parallel %d × pipeline_parallel %d)",
                          flags.rank, flags.tensor_parallel, flags.pipeline_parallel));
    }
    config.layout.rank = flags.rank;
    if (flags.leader_address.empty()) {
      if (world_size > 1) {
        return absl::InvalidArgumentError("--rank needs --leader_address host:port");
      }
      return config;
    }
    absl::Status parsed =
        SplitHostPort(flags.leader_address, &config.leader_host, &config.leader_port);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--leader_address: ", parsed.message()));
    }
    return config;
  }

  const std::optional<std::string> leader = environment("LWS_LEADER_ADDRESS");
  if (!leader.has_value() || leader->empty()) {
    if (world_size == 1) return config;
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor_parallel %d × pipeline_parallel %d needs --rank and --leader_address, or a "
        "LeaderWorkerSet environment (LWS_LEADER_ADDRESS, LWS_GROUP_SIZE, LWS_WORKER_INDEX)",
        flags.tensor_parallel, flags.pipeline_parallel));
  }
  REFLECT_ASSIGN_OR_RETURN(const int group_size, IntegerVariable(environment, "LWS_GROUP_SIZE"));
  REFLECT_ASSIGN_OR_RETURN(const int worker_index,
                           IntegerVariable(environment, "LWS_WORKER_INDEX"));
  if (group_size * flags.ranks_per_pod != world_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "LWS_GROUP_SIZE=%d × ranks_per_pod %d != tensor_parallel %d × pipeline_parallel %d",
        group_size, flags.ranks_per_pod, flags.tensor_parallel, flags.pipeline_parallel));
  }
  if (worker_index >= group_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "LWS_WORKER_INDEX=%d is not below LWS_GROUP_SIZE=%d", worker_index, group_size));
  }
  config.layout.rank = worker_index * flags.ranks_per_pod + flags.local_rank;
  config.leader_host = *leader;
  config.leader_port = flags.rendezvous_port;
  return config;
}

std::optional<std::string> ProcessEnvironment(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

}  // namespace reflect
