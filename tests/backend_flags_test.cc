// Choosing and sizing a backend from flags: --backend and the CUDA flags' range checks
// (worker/backend_kind.h), reflect-worker's options (worker/replica/backend_choice.h) against
// sizes worked out by hand, and the programs' answers to --backend cuda where it cannot run
// (FAILED_PRECONDITION saying why, never a crash) and to bad values (exit 2 naming the flag).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "common/model_config.h"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"
#include "worker/backend_kind.h"
#include "worker/cuda/cuda_usable.h"
#include "worker/replica/backend_choice.h"

namespace reflect {
namespace {

TEST(BackendKindTest, ParsesCpuAndCudaOnly) {
  EXPECT_EQ(ParseBackendKind("cpu").value(), BackendKind::kCpu);
  EXPECT_EQ(ParseBackendKind("cuda").value(), BackendKind::kCuda);
  for (const char* bad : {"", "CUDA", "tpu", "cpu "}) {
    const absl::Status status = ParseBackendKind(bad).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << bad;
    EXPECT_NE(status.message().find("--backend"), absl::string_view::npos) << status;
  }
}

TEST(BackendKindTest, CudaFlagRanges) {
  EXPECT_TRUE(CheckCudaFlags(0.9, 0, 1).ok());
  EXPECT_TRUE(CheckCudaFlags(1.0, 7, 1).ok());
  for (const double fraction : {0.0, -0.5, 1.01, std::nan("")}) {
    const absl::Status status = CheckCudaFlags(fraction, 0, 1);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << fraction;
    EXPECT_NE(status.message().find("--gpu_memory_utilization"), absl::string_view::npos);
  }
  const absl::Status device = CheckCudaFlags(0.9, -1, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(device));
  EXPECT_NE(device.message().find("--device"), absl::string_view::npos);
  const absl::Status group = CheckCudaFlags(0.9, 0, 4);
  EXPECT_TRUE(absl::IsInvalidArgument(group));
  EXPECT_NE(group.message().find("one rank per replica"), absl::string_view::npos);
}

// The tiny test model's shape: 4 layers, 2 KV heads of 32.
ModelConfig TinyShape() {
  ModelConfig model;
  model.num_hidden_layers = 4;
  model.num_key_value_heads = 2;
  model.head_dim = 32;
  return model;
}

TEST(BackendChoiceTest, KvBlocksFollowTheElementSizeOfEachBackend) {
  const ModelConfig model = TinyShape();
  // Keys and values × 4 layers × 2 heads × 32 dims × 16 tokens = 8,192 elements per block.
  EXPECT_EQ(KvBlockBytes(model, 16, 4), 32768);
  EXPECT_EQ(KvBlocksInGib(model, 16, BackendKind::kCpu, 1.0), 32768);   // 2^30 / 2^15
  EXPECT_EQ(KvBlocksInGib(model, 16, BackendKind::kCuda, 1.0), 65536);  // bf16: half the bytes
  EXPECT_EQ(KvBlocksInGib(model, 16, BackendKind::kCpu, 0.0), 0);

  WorkerBackendFlags flags;
  flags.kv_cache_gib = 0.5;
  flags.swap_space_gib = 0.25;
  const CpuBackendOptions cpu = CpuOptionsFor(flags, model);
  EXPECT_EQ(cpu.num_kv_blocks, 16384);
  EXPECT_EQ(cpu.num_host_blocks, 8192);
  flags.num_kv_blocks = 100;  // an explicit count wins over --kv_cache_gib
  EXPECT_EQ(CpuOptionsFor(flags, model).num_kv_blocks, 100);
}

TEST(BackendChoiceTest, CudaOptionsCarryTheFlagsAndRefuseReplicaGroups) {
  WorkerBackendFlags flags;
  flags.kind = BackendKind::kCuda;
  flags.swap_space_gib = 0.25;
  flags.max_num_batched_tokens = 4096;
  flags.max_num_seqs = 64;
  flags.gpu_memory_utilization = 0.8;
  flags.deterministic = true;
  flags.cuda_graphs = false;
  flags.device = 2;
  const absl::StatusOr<cuda::CudaBackendOptions> options =
      CudaOptionsFor(flags, TinyShape(), /*world_size=*/1);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->num_kv_blocks, 0);  // sized by the backend from free device memory
  EXPECT_EQ(options->num_host_blocks, 16384);
  EXPECT_EQ(options->max_tokens_per_step, 4096);
  EXPECT_EQ(options->max_sequences_per_step, 64);
  EXPECT_EQ(options->gpu_memory_utilization, 0.8);
  EXPECT_TRUE(options->deterministic);
  EXPECT_FALSE(options->cuda_graphs);
  EXPECT_EQ(options->device, 2);

  const absl::Status group = CudaOptionsFor(flags, TinyShape(), /*world_size=*/2).status();
  EXPECT_TRUE(absl::IsInvalidArgument(group));
  EXPECT_NE(group.message().find("one rank per replica"), absl::string_view::npos);
  flags.gpu_memory_utilization = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(CudaOptionsFor(flags, TinyShape(), 1).status()));
}

std::string WorkerBinary() { return std::string(REFLECT_BINARY_DIR) + "/worker/reflect-worker"; }

TEST(BackendFlagsProgramTest, BadValuesExitTwoNamingTheFlag) {
  const std::string model = testing::TestModelPath("tiny").string();
  testing::ProcessResult result =
      testing::RunProcess({WorkerBinary(), "--model", model, "--port", "0", "--backend", "tpu"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.standard_error.find("--backend"), std::string::npos) << result.standard_error;
  result = testing::RunProcess({WorkerBinary(), "--model", model, "--port", "0", "--backend",
                                "cuda", "--gpu_memory_utilization", "2"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.standard_error.find("--gpu_memory_utilization"), std::string::npos)
      << result.standard_error;
  result = testing::RunReflect("bench", {"--model", model, "--backend", "tpu"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.standard_error.find("--backend"), std::string::npos) << result.standard_error;
}

// Where no CUDA device can be used, --backend cuda is a clear FAILED_PRECONDITION from the worker
// and from `reflect bench`. (With a usable GPU both would run; tools/gpu-check.sh covers that.)
TEST(BackendFlagsProgramTest, CudaWithoutAUsableDeviceSaysWhy) {
  if (cuda::CheckCudaUsable("test").ok()) GTEST_SKIP() << "a usable GPU is present";
  const std::string model = testing::TestModelPath("tiny").string();
  testing::ProcessResult result =
      testing::RunProcess({WorkerBinary(), "--model", model, "--port", "0", "--backend", "cuda"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.standard_error.find("FAILED_PRECONDITION"), std::string::npos)
      << result.standard_error;
  EXPECT_NE(result.standard_error.find("CUDA"), std::string::npos) << result.standard_error;
  result = testing::RunReflect("bench", {"--model", model, "--backend", "cuda"});
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.standard_error.find("CUDA"), std::string::npos) << result.standard_error;
}

}  // namespace
}  // namespace reflect
