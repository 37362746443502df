// The CPUs this process may run on.
#pragma once

namespace recall {

// The CPUs in this process's affinity mask (what Slurm's --cpus-per-task and mpirun's binding
// give a rank), at least 1. Kernels that take a thread count use this many.
int usable_cpus();

}  // namespace recall
