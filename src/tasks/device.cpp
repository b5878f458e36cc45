#include "tasks/device.h"

#include <cstdlib>

#include "backend/cuda/cuda_api.h"

namespace attn::tasks {

using config::Config;
using config::ConfigError;

namespace {

// The first of the launchers' local-rank variables that is set (mpirun, srun, torchrun style).
int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(name); v && *v) return std::atoi(v);
  return 0;
}

}  // namespace

Device run_device(const Config& c) {
  if (c.get_string("run.device") == "cpu") return Device::cpu();
  if (!cuda::built_with_cuda())
    throw ConfigError("config key 'run.device': cuda, but this attnlab was built without CUDA (configure with "
                      "-DATTNLAB_CUDA=ON where the CUDA toolkit is installed)");
  int n = cuda::device_count();
  if (n == 0)
    throw ConfigError("config key 'run.device': cuda, but no CUDA device is visible (check nvidia-smi and "
                      "CUDA_VISIBLE_DEVICES)");
  return Device::cuda(local_rank() % n);
}

void place_model(nn::Module& model, const Config& c) {
  Device dev = run_device(c);
  if (!dev.is_cpu()) model.to(dev);
  if (c.get_string("run.precision") == "bf16") model.set_compute_dtype(DType::BF16);
}

}  // namespace attn::tasks
