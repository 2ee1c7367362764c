#include "common/metrics.h"

#include <utility>

#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace reflect {

std::vector<double> RequestLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,  0.1,   0.25,  0.5,    1.0,    2.5,
          5.0,   10.0,   20.0,  30.0, 60.0,  120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0};
}

std::vector<double> TokenLatencyBuckets() {
  return {0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02,  0.025, 0.03,
          0.04,  0.05,  0.075, 0.1,   0.15,   0.2,  0.3,   0.4,   0.5,   0.75,
          1.0,   2.5,   5.0,   10.0,  30.0,   60.0, 300.0, 3600.0};
}

std::vector<double> BatchSizeBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}; }

std::vector<double> SmallCountBuckets() { return {0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89}; }

std::string SerializeMetrics(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

RefreshingCollectable::RefreshingCollectable(std::shared_ptr<prometheus::Registry> registry,
                                             std::function<void()> refresh)
    : registry_(std::move(registry)), refresh_(std::move(refresh)) {}

std::vector<prometheus::MetricFamily> RefreshingCollectable::Collect() const {
  if (refresh_) refresh_();
  return registry_->Collect();
}

}  // namespace reflect
