// NCCL communicator on real GPUs: a one-rank group on one device, two ranks (threads) on two.
// Skips where there is no device, or in a build without NCCL.
#include "gtest/gtest.h"

#ifdef REFLECT_WITH_NCCL

#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "worker/parallel/in_process_store.h"
#include "worker/parallel/nccl_communicator.h"

namespace reflect {
namespace {

int DeviceCount() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

// `count` floats of device memory on the current device, freed with the object.
class DeviceFloats {
 public:
  explicit DeviceFloats(int64_t count) : count_(count) {
    EXPECT_EQ(cudaMalloc(&data_, count * sizeof(float)), cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(data_); }
  float* data() { return static_cast<float*>(data_); }
  void Upload(const std::vector<float>& values) {
    ASSERT_EQ(cudaMemcpy(data_, values.data(), count_ * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  std::vector<float> Download() {
    std::vector<float> values(count_);
    EXPECT_EQ(cudaMemcpy(values.data(), data_, count_ * sizeof(float), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return values;
  }

 private:
  int64_t count_;
  void* data_ = nullptr;
};

std::vector<float> Input(int rank, int64_t count) {
  std::vector<float> values(count);
  for (int64_t i = 0; i < count; ++i) values[i] = static_cast<float>((i * 7 + rank * 13) % 101);
  return values;
}

TEST(NcclCommunicatorTest, OneRankGroupOnOneDevice) {
  if (DeviceCount() < 1) GTEST_SKIP() << "no CUDA device";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  auto communicator =
      CreateNcclCommunicator(std::make_shared<InProcessStore>(), "one", 0, 1, absl::Seconds(60));
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  DeviceFloats data(1001), gathered(1001);
  data.Upload(Input(0, 1001));
  ASSERT_TRUE((*communicator)->AllReduceSum(data.data(), 1001).ok());
  EXPECT_EQ(data.Download(), Input(0, 1001));
  ASSERT_TRUE((*communicator)->AllGather(data.data(), 1001, gathered.data()).ok());
  EXPECT_EQ(gathered.Download(), Input(0, 1001));
  ASSERT_TRUE((*communicator)->Broadcast(data.data(), 4004, 0, absl::Seconds(10)).ok());
  EXPECT_EQ((*communicator)->Send(data.data(), 4, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(NcclCommunicatorTest, TwoRanksOnTwoDevices) {
  if (DeviceCount() < 2) GTEST_SKIP() << "fewer than 2 CUDA devices";
  auto store = std::make_shared<InProcessStore>();
  const int64_t count = 1000003;
  std::vector<std::vector<float>> sums(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      ASSERT_EQ(cudaSetDevice(rank), cudaSuccess);
      auto created = CreateNcclCommunicator(store, "pair", rank, 2, absl::Seconds(60));
      ASSERT_TRUE(created.ok()) << created.status();
      Communicator& communicator = **created;
      DeviceFloats data(count), gathered(2 * count);
      data.Upload(Input(rank, count));
      ASSERT_TRUE(communicator.AllGather(data.data(), count, gathered.data()).ok());
      const std::vector<float> all = gathered.Download();
      EXPECT_EQ(std::vector<float>(all.begin(), all.begin() + count), Input(0, count));
      EXPECT_EQ(std::vector<float>(all.begin() + count, all.end()), Input(1, count));
      ASSERT_TRUE(communicator.AllReduceSum(data.data(), count).ok());
      sums[rank] = data.Download();
      for (int root = 0; root < 2; ++root) {
        data.Upload(Input(rank == root ? 5 : 6, count));
        ASSERT_TRUE(communicator.Broadcast(data.data(), count * 4, root, absl::Seconds(30)).ok());
        EXPECT_EQ(data.Download(), Input(5, count));
      }
      if (rank == 0) {
        data.Upload(Input(9, count));
        EXPECT_TRUE(communicator.Send(data.data(), count * 4, 1).ok());
      } else {
        ASSERT_TRUE(communicator.Recv(data.data(), count * 4, 0, absl::Seconds(30)).ok());
        EXPECT_EQ(data.Download(), Input(9, count));
      }
    });
  }
  for (std::thread& rank : ranks) rank.join();
  ASSERT_EQ(sums[0].size(), static_cast<size_t>(count));
  EXPECT_EQ(std::memcmp(sums[0].data(), sums[1].data(), count * sizeof(float)), 0);
  const std::vector<float> zero = Input(0, count), one = Input(1, count);
  for (int64_t i = 0; i < count; i += 997) EXPECT_EQ(sums[0][i], zero[i] + one[i]);
}

}  // namespace
}  // namespace reflect

#else

TEST(NcclCommunicatorTest, BuiltWithoutNccl) { GTEST_SKIP() << "built without NCCL"; }

#endif
