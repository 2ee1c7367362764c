// cuBLASLt opened at run time (worker/cuda/cublaslt_loader.cc): the forwarding entry points reach
// the real library — no GPU needed for its status names — and a CUDA-built program keeps the
// small thread stacks civetweb needs (ReplicaMetricsTest covers the worker's /metrics).
#include <gtest/gtest.h>

#include <string>

#ifdef REFLECT_WITH_CUDA
#include <cublasLt.h>

namespace reflect {
namespace {

TEST(CublasLtLoaderTest, ForwardsToTheLibrary) {
  EXPECT_EQ(std::string(cublasLtGetStatusName(CUBLAS_STATUS_SUCCESS)), "CUBLAS_STATUS_SUCCESS");
  EXPECT_EQ(std::string(cublasLtGetStatusName(CUBLAS_STATUS_INVALID_VALUE)),
            "CUBLAS_STATUS_INVALID_VALUE");
}

}  // namespace
}  // namespace reflect
#else
TEST(CublasLtLoaderTest, BuiltWithoutCuda) { GTEST_SKIP() << "built without CUDA"; }
#endif
