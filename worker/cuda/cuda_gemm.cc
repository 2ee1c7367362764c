#include "worker/cuda/cuda_gemm.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reflect::cuda {
namespace {

absl::Status CublasStatus(cublasStatus_t status, absl::string_view what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasLtGetStatusName(status), ": ",
                                          cublasLtGetStatusString(status)));
}

// The three matrix layouts of one product (see the header for the column-major reading).
struct Layouts {
  cublasLtMatrixLayoutOpaque_t weight = {};  // [k, n] column-major, ld k, transposed by op T
  cublasLtMatrixLayoutOpaque_t input = {};   // [k, m] column-major, ld k
  cublasLtMatrixLayoutOpaque_t output = {};  // [n, m] column-major, ld n (also C: in place)
};

absl::Status InitLayouts(int64_t m, int64_t n, int64_t k, Layouts& layouts) {
  REFLECT_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutInit(&layouts.weight, CUDA_R_16BF, k, n, k), "cuBLASLt weight layout"));
  REFLECT_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutInit(&layouts.input, CUDA_R_16BF, k, m, k), "cuBLASLt input layout"));
  return CublasStatus(cublasLtMatrixLayoutInit(&layouts.output, CUDA_R_32F, n, m, n),
                      "cuBLASLt output layout");
}

std::string ShapeName(int64_t m, int64_t n, int64_t k) {
  return absl::StrCat("[", m, ", ", k, "] x [", n, ", ", k, "]^T");
}

}  // namespace

int64_t RowBucket(int64_t rows) {
  int64_t power = 1;
  while (power < rows) power *= 2;
  if (power <= 16) return power;
  const int64_t three_quarters = power / 4 * 3;  // 1.5 times the power of two below
  return rows <= three_quarters ? three_quarters : power;
}

CudaGemm::CudaGemm(bool deterministic, cublasLtHandle_t handle, DeviceBuffer<std::byte> workspace)
    : deterministic_(deterministic), handle_(handle), workspace_(std::move(workspace)) {}

CudaGemm::~CudaGemm() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<std::unique_ptr<CudaGemm>> CudaGemm::Create(bool deterministic) {
  REFLECT_ASSIGN_OR_RETURN(
      DeviceBuffer<std::byte> workspace,
      DeviceBuffer<std::byte>::Allocate(kWorkspaceBytes, "cuBLASLt workspace"));
  cublasLtHandle_t handle = nullptr;
  REFLECT_RETURN_IF_ERROR(CublasStatus(cublasLtCreate(&handle), "cublasLtCreate"));
  std::unique_ptr<CudaGemm> gemm(new CudaGemm(deterministic, handle, std::move(workspace)));
  REFLECT_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescInit(&gemm->operation_, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                   "cuBLASLt matmul descriptor"));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  const cublasOperation_t keep = CUBLAS_OP_N;
  REFLECT_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescSetAttribute(&gemm->operation_, CUBLASLT_MATMUL_DESC_TRANSA,
                                                  &transpose, sizeof(transpose)),
                   "cuBLASLt TRANSA"));
  REFLECT_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescSetAttribute(&gemm->operation_, CUBLASLT_MATMUL_DESC_TRANSB,
                                                  &keep, sizeof(keep)),
                   "cuBLASLt TRANSB"));
  return gemm;
}

absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> CudaGemm::Candidates(int64_t m, int64_t n,
                                                                       int64_t k, bool no_reduction,
                                                                       int count) {
  Layouts layouts;
  REFLECT_RETURN_IF_ERROR(InitLayouts(m, n, k, layouts));
  cublasLtMatmulPreferenceOpaque_t preference = {};
  REFLECT_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulPreferenceInit(&preference), "cuBLASLt preference"));
  const uint64_t workspace_bytes = kWorkspaceBytes;
  REFLECT_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmulPreferenceSetAttribute(&preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &workspace_bytes, sizeof(workspace_bytes)),
      "cuBLASLt workspace preference"));
  if (no_reduction) {
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE;
    REFLECT_RETURN_IF_ERROR(CublasStatus(
        cublasLtMatmulPreferenceSetAttribute(
            &preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes)),
        "cuBLASLt reduction preference"));
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(count);
  int returned = 0;
  REFLECT_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulAlgoGetHeuristic(handle_, &operation_, &layouts.weight,
                                                  &layouts.input, &layouts.output, &layouts.output,
                                                  &preference, count, results.data(), &returned),
                   absl::StrCat("cuBLASLt heuristic for ", ShapeName(m, n, k))));
  std::vector<cublasLtMatmulAlgo_t> candidates;
  for (int index = 0; index < returned; ++index) {
    if (results[index].state == CUBLAS_STATUS_SUCCESS &&
        results[index].workspaceSize <= static_cast<size_t>(kWorkspaceBytes)) {
      candidates.push_back(results[index].algo);
    }
  }
  if (candidates.empty()) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for bf16 ",
                                            ShapeName(m, n, k), " with f32 output"));
  }
  return candidates;
}

bool CudaGemm::Accepts(const cublasLtMatmulAlgo_t& algorithm, int64_t m, int64_t n, int64_t k) {
  Layouts layouts;
  if (!InitLayouts(m, n, k, layouts).ok()) return false;
  cublasLtMatmulHeuristicResult_t result = {};
  const cublasStatus_t status =
      cublasLtMatmulAlgoCheck(handle_, &operation_, &layouts.weight, &layouts.input,
                              &layouts.output, &layouts.output, &algorithm, &result);
  return status == CUBLAS_STATUS_SUCCESS &&
         result.workspaceSize <= static_cast<size_t>(kWorkspaceBytes);
}

bool CudaGemm::ChooseForAllRows(const std::vector<cublasLtMatmulAlgo_t>& candidates, int64_t n,
                                int64_t k, int64_t max_rows, cublasLtMatmulAlgo_t& chosen) {
  std::vector<int64_t> checked_rows;
  for (int64_t rows = 1; rows <= std::min<int64_t>(16, max_rows); ++rows) {
    checked_rows.push_back(rows);
  }
  for (int64_t rows = 24; rows < max_rows; rows = RowBucket(rows + 1)) checked_rows.push_back(rows);
  checked_rows.push_back(max_rows);
  for (const cublasLtMatmulAlgo_t& candidate : candidates) {
    int32_t splits = 0;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&candidate, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits,
                                             sizeof(splits), &written) != CUBLAS_STATUS_SUCCESS ||
        splits != 1) {
      continue;
    }
    bool accepted = true;
    for (const int64_t rows : checked_rows) {
      if (!Accepts(candidate, rows, n, k)) {
        accepted = false;
        break;
      }
    }
    if (accepted) {
      chosen = candidate;
      return true;
    }
  }
  return false;
}

absl::Status CudaGemm::AddShape(int64_t n, int64_t k, int64_t max_rows) {
  if (n <= 0 || k <= 0 || max_rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM shape n ", n, ", k ", k, ", max rows ", max_rows, " is not positive"));
  }
  Shape& shape = shapes_[ShapeKey(n, k)];
  shape.max_rows = std::max(shape.max_rows, max_rows);
  if (!deterministic_) return absl::OkStatus();
  // Candidates without a reduction scheme first; in case cuBLASLt reads the empty mask as "none
  // allowed", any candidates next (ChooseForAllRows keeps only split-K 1 either way).
  constexpr int kCandidates = 16;
  absl::Status last_error = absl::OkStatus();
  for (const int64_t heuristic_rows : {shape.max_rows, int64_t{1}}) {
    for (const bool no_reduction : {true, false}) {
      absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> candidates =
          Candidates(heuristic_rows, n, k, no_reduction, kCandidates);
      if (!candidates.ok()) {
        last_error = candidates.status();
      } else if (ChooseForAllRows(*candidates, n, k, shape.max_rows, shape.algorithm)) {
        return absl::OkStatus();
      }
    }
  }
  return absl::InternalError(absl::StrCat(
      "deterministic GEMM: no cuBLASLt algorithm without split-K runs every row count up to ",
      shape.max_rows, " for ", ShapeName(shape.max_rows, n, k),
      last_error.ok() ? "" : absl::StrCat(" (", last_error.message(), ")")));
}

absl::StatusOr<cublasLtMatmulAlgo_t> CudaGemm::AlgorithmFor(int64_t m, int64_t n, int64_t k) {
  const ProblemKey key(m, n, k);
  if (const auto found = row_algorithms_.find(key); found != row_algorithms_.end()) {
    return found->second;
  }
  const ProblemKey bucket_key(RowBucket(m), n, k);
  auto bucket = bucket_algorithms_.find(bucket_key);
  if (bucket == bucket_algorithms_.end()) {
    REFLECT_ASSIGN_OR_RETURN(std::vector<cublasLtMatmulAlgo_t> candidates,
                             Candidates(RowBucket(m), n, k, /*no_reduction=*/false, 1));
    bucket = bucket_algorithms_.emplace(bucket_key, candidates.front()).first;
  }
  cublasLtMatmulAlgo_t algorithm = bucket->second;
  if (!Accepts(algorithm, m, n, k)) {
    // Rare: the bucket's algorithm cannot run this m; the exact m's own choice can (this m then
    // no longer matches a padded graph batch bit for bit).
    REFLECT_ASSIGN_OR_RETURN(std::vector<cublasLtMatmulAlgo_t> candidates,
                             Candidates(m, n, k, /*no_reduction=*/false, 1));
    algorithm = candidates.front();
  }
  row_algorithms_.emplace(key, algorithm);
  return algorithm;
}

absl::Status CudaGemm::Multiply(const Bf16* input, int64_t m, const Bf16* weight, int64_t n,
                                int64_t k, float* output, bool accumulate, cudaStream_t stream) {
  if (m == 0) return absl::OkStatus();
  const auto shape = shapes_.find(ShapeKey(n, k));
  if (shape == shapes_.end() || m < 0 || m > shape->second.max_rows) {
    return absl::InternalError(
        absl::StrCat("GEMM ", ShapeName(m, n, k), " was not declared with AddShape"));
  }
  cublasLtMatmulAlgo_t algorithm = shape->second.algorithm;
  if (!deterministic_) {
    REFLECT_ASSIGN_OR_RETURN(algorithm, AlgorithmFor(m, n, k));
  }
  Layouts layouts;
  REFLECT_RETURN_IF_ERROR(InitLayouts(m, n, k, layouts));
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  return CublasStatus(
      cublasLtMatmul(handle_, &operation_, &alpha, weight, &layouts.weight, input, &layouts.input,
                     &beta, output, &layouts.output, output, &layouts.output, &algorithm,
                     workspace_.data(), workspace_.size(), stream),
      absl::StrCat("cublasLtMatmul ", ShapeName(m, n, k)));
}

}  // namespace reflect::cuda
