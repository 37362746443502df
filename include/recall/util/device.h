// Where a rank computes: the CPU, or the CUDA device of its local rank.
#pragma once

#include "recall/util/enum_names.h"

namespace recall {

enum class Device { Cpu, Cuda };
inline constexpr EnumName<Device> kDevices[] = {{"cpu", Device::Cpu}, {"cuda", Device::Cuda}};

}  // namespace recall
