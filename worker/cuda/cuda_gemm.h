// CudaGemm: the CUDA backend's matrix products on cuBLASLt (DESIGN §6, issue #5):
//   output[m, n] (f32, row-major) = input[m, k] (bf16, row-major) · weight[n, k]ᵀ
// with weight in PyTorch's Linear layout [out, in], products accumulated in f32, and optionally
// output += ... (beta = 1: o_proj and down_proj add straight into the f32 residual stream).
//
// cuBLASLt is column-major, and a row-major [r, c] matrix is the column-major [c, r] matrix of the
// same bytes. So the product runs as outputᵀ[n, m] = weight[n, k] · inputᵀ[k, m]: the weight is
// described as the column-major [k, n] matrix it is in memory and transposed (op T), the input as
// the column-major [k, m] matrix it is (op N), the output as column-major [n, m] (ld n).
//
// Algorithms:
// - Default: cuBLASLt's heuristic choice for (RowBucket(m), n, k), cached, and used for every m
//   of the bucket once cublasLtMatmulAlgoCheck accepts it for that m. A decode batch padded to
//   its graph bucket therefore runs the very kernels the unpadded batch runs, so logits are the
//   same bits with and without CUDA graphs.
// - Deterministic: one algorithm per (n, k), chosen by AddShape for the largest m, with split-K 1
//   and no reduction scheme, and run for every m. Why that is batch invariant: an algorithm fixes
//   the tile shape and the order in which a tile walks k; without split-K one thread block
//   reduces each output element over all of k in that order. m only sets how many tiles cover
//   the rows (and which rows of the last tile are masked), so output row i is a function of input
//   row i and the weight alone, whatever the other rows are (a kernel that split k by the size of
//   its grid, as stream-K does, would break this: tests/cuda_backend_test.cc checks the bits).
//   The chosen algorithm must pass cublasLtMatmulAlgoCheck at every m in 1..16 and every
//   RowBucket up to the largest m; if the heuristic's candidates for the largest m all fail, the
//   candidates for m = 1 are tried the same way (slower for big batches but still one algorithm
//   for all), else AddShape fails.
//
// Ownership: owns the cuBLASLt handle, descriptors and a workspace of kWorkspaceBytes.
// Thread-safety: one caller at a time. Cost: Multiply is one cublasLtMatmul; a (m, n, k) seen
// for the first time also costs a heuristic query and an algorithm check on the host.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/cuda/cuda_ops.h"
#include "worker/cuda/device_buffer.h"

namespace reflect::cuda {

// The row counts that share an algorithm, and the batch sizes of decode graphs: 1, 2, 4, 8, 16,
// 24, 32, 48, 64, 96, 128, 192, ... (powers of two, and from 24 on 1.5 times one). Returns the
// smallest of them ≥ rows (1 for rows ≤ 1).
int64_t RowBucket(int64_t rows);

class CudaGemm {
 public:
  static constexpr int64_t kWorkspaceBytes = int64_t{32} << 20;

  static absl::StatusOr<std::unique_ptr<CudaGemm>> Create(bool deterministic);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;

  // Declares a weight shape [n, k] that Multiply will see with 1..max_rows rows; deterministic:
  // chooses its algorithm now (INTERNAL when no candidate passes the checks above).
  absl::Status AddShape(int64_t n, int64_t k, int64_t max_rows);

  // output[m, n] = input[m, k] · weight[n, k]ᵀ, or output += that with `accumulate`; enqueued on
  // `stream`; m = 0 does nothing. The shape must have been added. Capturable in a CUDA graph once
  // the same (m, n, k) has run outside a capture (the first run may query cuBLASLt).
  absl::Status Multiply(const Bf16* input, int64_t m, const Bf16* weight, int64_t n, int64_t k,
                        float* output, bool accumulate, cudaStream_t stream);

 private:
  struct Shape {
    int64_t max_rows = 0;
    cublasLtMatmulAlgo_t algorithm = {};  // deterministic mode's one algorithm
  };
  using ShapeKey = std::tuple<int64_t, int64_t>;             // (n, k)
  using ProblemKey = std::tuple<int64_t, int64_t, int64_t>;  // (m, n, k)

  CudaGemm(bool deterministic, cublasLtHandle_t handle, DeviceBuffer<std::byte> workspace);

  // Up to `count` heuristic candidates for (m, n, k), best first; `no_reduction` keeps only
  // algorithms without split-K reduction. INTERNAL when cuBLASLt returns none.
  absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> Candidates(int64_t m, int64_t n, int64_t k,
                                                               bool no_reduction, int count);
  // True when cuBLASLt accepts `algorithm` for (m, n, k) within the workspace.
  bool Accepts(const cublasLtMatmulAlgo_t& algorithm, int64_t m, int64_t n, int64_t k);
  // Deterministic mode: the first of `candidates` with split-K 1 that every checked m accepts.
  bool ChooseForAllRows(const std::vector<cublasLtMatmulAlgo_t>& candidates, int64_t n, int64_t k,
                        int64_t max_rows, cublasLtMatmulAlgo_t& chosen);
  // Default mode: the algorithm for (m, n, k), from the caches or cuBLASLt.
  absl::StatusOr<cublasLtMatmulAlgo_t> AlgorithmFor(int64_t m, int64_t n, int64_t k);

  const bool deterministic_;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDescOpaque_t operation_ = {};  // f32 compute and scale, op(A) = T, op(B) = N
  DeviceBuffer<std::byte> workspace_;
  absl::flat_hash_map<ShapeKey, Shape> shapes_;
  absl::flat_hash_map<ProblemKey, cublasLtMatmulAlgo_t> bucket_algorithms_;  // m = a bucket
  absl::flat_hash_map<ProblemKey, cublasLtMatmulAlgo_t> row_algorithms_;     // exact m, checked
};

}  // namespace reflect::cuda
