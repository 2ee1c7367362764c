// cuBLASLt loaded at first use (dlopen) instead of linked: the entry points cuda_gemm.cc calls
// are defined here and forward to the library's own.
//
// Why: libcublasLt has ~94 KB of thread-local storage. Linked into a program, that TLS is static
// and every thread's stack must hold it — including the small fixed stacks civetweb (under
// prometheus-cpp's metrics Exposer) gives its threads, whose creation then fails, so a
// CUDA-built reflect-worker could not serve /metrics. A library opened with dlopen keeps its TLS
// in blocks allocated apart from the stacks. Its symbols are opened RTLD_LOCAL, so these
// definitions are the only ones the program sees.
//
// A missing library makes every call fail with CUBLAS_STATUS_NOT_INITIALIZED (cuda_gemm.cc turns
// that into a status naming cuBLASLt); the status strings then say the library is missing.
#include <cublasLt.h>
#include <dlfcn.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace {

// The cuBLASLt of the headers' major version (or any), opened once; null when not found.
void* Library() {
  static void* const library = [] {
    const std::string versioned = absl::StrCat("libcublasLt.so.", CUBLAS_VER_MAJOR);
    void* handle = dlopen(versioned.c_str(), RTLD_NOW | RTLD_LOCAL);
    return handle != nullptr ? handle : dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
  }();
  return library;
}

// The library's own `name`, or null when it (or the library) cannot be found.
template <typename Function>
Function* Resolve(const char* name) {
  void* const library = Library();
  return library == nullptr ? nullptr : reinterpret_cast<Function*>(dlsym(library, name));
}

constexpr char kMissing[] = "libcublasLt could not be loaded (dlopen)";

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  static auto* const real = Resolve<decltype(cublasLtCreate)>("cublasLtCreate");
  return real != nullptr ? real(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  static auto* const real = Resolve<decltype(cublasLtDestroy)>("cublasLtDestroy");
  return real != nullptr ? real(handle) : CUBLAS_STATUS_NOT_INITIALIZED;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  static auto* const real = Resolve<decltype(cublasLtGetStatusName)>("cublasLtGetStatusName");
  return real != nullptr ? real(status) : kMissing;
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  static auto* const real = Resolve<decltype(cublasLtGetStatusString)>("cublasLtGetStatusString");
  return real != nullptr ? real(status) : kMissing;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t description,
                              const void* alpha, const void* a, cublasLtMatrixLayout_t a_layout,
                              const void* b, cublasLtMatrixLayout_t b_layout, const void* beta,
                              const void* c, cublasLtMatrixLayout_t c_layout, void* d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo,
                              void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  static auto* const real = Resolve<decltype(cublasLtMatmul)>("cublasLtMatmul");
  return real != nullptr ? real(handle, description, alpha, a, a_layout, b, b_layout, beta, c,
                                c_layout, d, d_layout, algo, workspace, workspace_bytes, stream)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t handle, cublasLtMatmulDesc_t description,
                                       cublasLtMatrixLayout_t a_layout,
                                       cublasLtMatrixLayout_t b_layout,
                                       cublasLtMatrixLayout_t c_layout,
                                       cublasLtMatrixLayout_t d_layout,
                                       const cublasLtMatmulAlgo_t* algo,
                                       cublasLtMatmulHeuristicResult_t* result) {
  static auto* const real = Resolve<decltype(cublasLtMatmulAlgoCheck)>("cublasLtMatmulAlgoCheck");
  return real != nullptr
             ? real(handle, description, a_layout, b_layout, c_layout, d_layout, algo, result)
             : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t* algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attribute,
                                                    void* buffer, size_t bytes, size_t* written) {
  static auto* const real = Resolve<decltype(cublasLtMatmulAlgoConfigGetAttribute)>(
      "cublasLtMatmulAlgoConfigGetAttribute");
  return real != nullptr ? real(algo, attribute, buffer, bytes, written)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t description, cublasLtMatrixLayout_t a_layout,
    cublasLtMatrixLayout_t b_layout, cublasLtMatrixLayout_t c_layout,
    cublasLtMatrixLayout_t d_layout, cublasLtMatmulPreference_t preference, int requested,
    cublasLtMatmulHeuristicResult_t results[], int* returned) {
  static auto* const real =
      Resolve<decltype(cublasLtMatmulAlgoGetHeuristic)>("cublasLtMatmulAlgoGetHeuristic");
  return real != nullptr ? real(handle, description, a_layout, b_layout, c_layout, d_layout,
                                preference, requested, results, returned)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t description, size_t size,
                                               cublasComputeType_t compute_type,
                                               cudaDataType_t scale_type) {
  static auto* const real =
      Resolve<decltype(cublasLtMatmulDescInit_internal)>("cublasLtMatmulDescInit_internal");
  return real != nullptr ? real(description, size, compute_type, scale_type)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t description,
                                              cublasLtMatmulDescAttributes_t attribute,
                                              const void* buffer, size_t bytes) {
  static auto* const real =
      Resolve<decltype(cublasLtMatmulDescSetAttribute)>("cublasLtMatmulDescSetAttribute");
  return real != nullptr ? real(description, attribute, buffer, bytes)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t preference,
                                                     size_t size) {
  static auto* const real = Resolve<decltype(cublasLtMatmulPreferenceInit_internal)>(
      "cublasLtMatmulPreferenceInit_internal");
  return real != nullptr ? real(preference, size) : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attribute,
                                                    const void* buffer, size_t bytes) {
  static auto* const real = Resolve<decltype(cublasLtMatmulPreferenceSetAttribute)>(
      "cublasLtMatmulPreferenceSetAttribute");
  return real != nullptr ? real(preference, attribute, buffer, bytes)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t layout, size_t size,
                                                 cudaDataType type, uint64_t rows, uint64_t columns,
                                                 int64_t leading_dimension) {
  static auto* const real =
      Resolve<decltype(cublasLtMatrixLayoutInit_internal)>("cublasLtMatrixLayoutInit_internal");
  return real != nullptr ? real(layout, size, type, rows, columns, leading_dimension)
                         : CUBLAS_STATUS_NOT_INITIALIZED;
}

}  // extern "C"
