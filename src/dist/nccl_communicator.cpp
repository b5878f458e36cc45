#include "dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/ops_cuda.h"
#include "dist/collective_args.h"
#include "dist/file_rendezvous.h"
#include "dist/launch_env.h"

namespace attn::dist {

namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::F64:
      return ncclFloat64;
    case DType::BF16:
      return ncclBfloat16;  // moved, never reduced as such (see all_reduce)
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
  }
  throw std::invalid_argument("NcclCommunicator: unknown dtype");
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Avg ? ncclAvg : ncclSum; }

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

std::string pci_bus_id(int device) {
  char buf[64] = {};
  ATTNLAB_CUDA_CHECK(cudaDeviceGetPCIBusId(buf, sizeof buf - 1, device));
  return buf;
}

// Between polls of a pending operation: spin briefly (a collective often takes microseconds),
// then sleep so a long wait does not burn a core.
void pause(Clock::time_point since) {
  if (Clock::now() - since < std::chrono::milliseconds(2))
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(500));
}

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0, world_size = 1;
  std::chrono::milliseconds timeout{0};
  Tensor barrier_flag;  // one f32 on the device
  std::string failure;  // why the communicator was aborted, once it was

  // Also when the constructor throws after the communicator was made. Never throws: a
  // communicator that cannot finish within the timeout is aborted.
  ~Impl() {
    if (!comm) return;
    ncclResult_t state = ncclCommFinalize(comm);
    const auto start = Clock::now();
    while (state == ncclInProgress && Clock::now() - start < timeout) {
      pause(start);
      if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) state = ncclInternalError;
    }
    if (state == ncclSuccess)
      ncclCommDestroy(comm);
    else
      ncclCommAbort(comm);
  }

  // Aborts the communicator (so no rank's GPU waits on it forever) and throws.
  [[noreturn]] void fail(const char* what, const std::string& why) {
    std::string detail = why;
    const char* last = ncclGetLastError(comm);  // comm may be null (NCCL: "currently unused")
    if (last && *last) detail += fmt::format(" ({})", last);
    if (comm) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    failure = fmt::format("{} failed on rank {} of {}: {}", what, rank, world_size, detail);
    throw std::runtime_error("NcclCommunicator: " + failure);
  }

  void require_comm() const {
    if (!comm)
      throw std::runtime_error("NcclCommunicator: used after " +
                               (failure.empty() ? std::string("abort") : failure));
  }

  // A call's result: ncclInProgress (non-blocking) is polled through ncclCommGetAsyncError until
  // it settles; an error, or no answer within the timeout, fails.
  void settle(const char* what, ncclResult_t result) {
    const auto start = Clock::now();
    while (result == ncclInProgress) {
      if (Clock::now() - start > timeout)
        fail(what, fmt::format("not done within {:.1f} s (a rank died, or never started?)",
                               timeout.count() / 1000.0));
      pause(start);
      if (ncclCommGetAsyncError(comm, &result) != ncclSuccess) result = ncclInternalError;
    }
    if (result != ncclSuccess) fail(what, ncclGetErrorString(result));
  }

  // Until this thread's stream has run everything queued on it, checking NCCL's async error.
  void wait(const char* what) {
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm, &async) != ncclSuccess) async = ncclInternalError;
      if (async != ncclSuccess && async != ncclInProgress) fail(what, ncclGetErrorString(async));
      cudaError_t q = cudaStreamQuery(cudaStreamPerThread);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) {
        cudaGetLastError();
        fail(what, std::string("CUDA error while waiting: ") + cudaGetErrorString(q));
      }
      if (Clock::now() - start > timeout)
        fail(what, fmt::format("did not finish within {:.1f} s (a rank died, or is stuck?)",
                               timeout.count() / 1000.0));
      pause(start);
    }
  }
};

NcclCommunicator::NcclCommunicator(const ProcessPlace& place, NcclOptions options)
    : place_(place), options_(std::move(options)), impl_(new Impl) {
  impl_->rank = place_.rank;
  impl_->world_size = place_.world_size;
  impl_->timeout = options_.timeout;
  const int dev = options_.device;
  int count = 0;
  ATTNLAB_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (dev < 0 || dev >= count)
    throw std::runtime_error(
        fmt::format("NcclCommunicator: rank {}: cuda:{} is not one of the {} visible devices",
                    place_.rank, dev, count));
  ATTNLAB_CUDA_CHECK(cudaSetDevice(dev));
  if (options_.host) check_one_gpu_per_rank(count);
  ncclUniqueId id;
  const std::string id_bytes = exchange_unique_id();
  std::memcpy(&id, id_bytes.data(), sizeof id);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  impl_->settle("ncclCommInitRankConfig",
                ncclCommInitRankConfig(&impl_->comm, place_.world_size, id, place_.rank, &config));
  // Every rank has joined, so every rank has read the file.
  if (!options_.host && place_.rank == 0) remove_rendezvous(options_.rendezvous_file);
  impl_->barrier_flag = Tensor::empty({1}, DType::F32, device());
}

// NCCL refuses two ranks on one GPU too, but only as an opaque failure of its initialisation.
void NcclCommunicator::check_one_gpu_per_rank(int visible_devices) {
  const int dev = options_.device;
  const std::string host = host_name(), bus = pci_bus_id(dev);
  Tensor mine = Tensor::empty({1}, DType::I64), all;
  mine.data<int64_t>()[0] = static_cast<int64_t>(fnv1a(host + "|" + bus));
  options_.host->all_gather(mine, all);
  std::vector<uint64_t> keys(all.numel());
  for (size_t r = 0; r < keys.size(); ++r) keys[r] = static_cast<uint64_t>(all.data<int64_t>()[r]);
  auto pair = ranks_sharing_a_gpu(keys);
  if (!pair) return;
  const bool me = pair->first == place_.rank || pair->second == place_.rank;
  throw std::runtime_error(fmt::format(
      "NcclCommunicator: ranks {} and {} would drive the same GPU{}: NCCL needs one GPU per rank "
      "({} ranks on this node, {} visible device(s)); start at most one rank per GPU on each node, "
      "or give each rank its own device (CUDA_VISIBLE_DEVICES)",
      pair->first, pair->second,
      me ? fmt::format(" (rank {}: {} cuda:{}, PCI {})", place_.rank, host, dev, bus) : "",
      place_.local_size, visible_devices));
}

// Rank 0's id, on every rank: over the host communicator, or through the rendezvous file.
std::string NcclCommunicator::exchange_unique_id() {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (place_.rank == 0) impl_->settle("ncclGetUniqueId", ncclGetUniqueId(&id));
  std::string bytes(id.internal, sizeof id);
  if (options_.host) {
    static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0);
    Tensor t = Tensor::empty({static_cast<int64_t>(sizeof id / sizeof(int64_t))}, DType::I64);
    std::memcpy(t.raw_data(), bytes.data(), sizeof id);
    options_.host->broadcast(t, 0);
    std::memcpy(bytes.data(), t.raw_data(), sizeof id);
    return bytes;
  }
  bytes = exchange_through_file(options_.rendezvous_file, place_.rank, bytes, options_.timeout);
  if (bytes.size() != sizeof id)
    throw std::runtime_error(fmt::format("rendezvous file '{}': {} bytes, a NCCL unique id has {}",
                                         options_.rendezvous_file, bytes.size(), sizeof id));
  return bytes;
}

NcclCommunicator::~NcclCommunicator() = default;

// cudaStreamPerThread is the calling thread's stream of the current device: make that ours.
void NcclCommunicator::enter(const char* what, const Tensor& t) {
  check_tensor(what, t, device());
  impl_->require_comm();
  ATTNLAB_CUDA_CHECK(cudaSetDevice(options_.device));
}

void NcclCommunicator::queued(const char* what, int nccl_result) {
  impl_->settle(what, static_cast<ncclResult_t>(nccl_result));
  if (options_.wait_each) impl_->wait(what);
}

void NcclCommunicator::synchronize() {
  impl_->require_comm();
  ATTNLAB_CUDA_CHECK(cudaSetDevice(options_.device));
  impl_->wait("synchronize");
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  const char* what = "NcclCommunicator::all_reduce";
  enter(what, t);
  check_reduce(what, t, op);
  const int64_t n = t.numel();
  if (n == 0) return;
  if (t.dtype() == DType::BF16) {  // in f32, rounded once
    // The staging buffer may be freed before the GPU is done with it: frees are stream-ordered
    // (cudaFreeAsync on this same stream).
    Tensor sum = Tensor::empty({n}, DType::F32, device());
    cuda::convert(DType::F32, sum.raw_data(), DType::BF16, t.raw_data(), n, options_.device);
    queued("ncclAllReduce", ncclAllReduce(sum.raw_data(), sum.raw_data(), n, ncclFloat32,
                                          nccl_op(op), impl_->comm, cudaStreamPerThread));
    cuda::convert(DType::BF16, t.raw_data(), DType::F32, sum.raw_data(), n, options_.device);
    return;
  }
  queued("ncclAllReduce", ncclAllReduce(t.raw_data(), t.raw_data(), n, nccl_type(t.dtype()),
                                        nccl_op(op), impl_->comm, cudaStreamPerThread));
}

void NcclCommunicator::broadcast(Tensor& t, int root) {
  const char* what = "NcclCommunicator::broadcast";
  enter(what, t);
  check_root(what, root, world_size());
  if (t.numel() == 0) return;
  queued("ncclBroadcast", ncclBroadcast(t.raw_data(), t.raw_data(), t.numel(), nccl_type(t.dtype()),
                                        root, impl_->comm, cudaStreamPerThread));
}

void NcclCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const char* what = "NcclCommunicator::all_gather";
  enter(what, in);
  prepare_out(what, in, out, in.numel() * world_size());
  if (in.numel() == 0) return;
  queued("ncclAllGather", ncclAllGather(in.raw_data(), out.raw_data(), in.numel(),
                                        nccl_type(in.dtype()), impl_->comm, cudaStreamPerThread));
}

void NcclCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const char* what = "NcclCommunicator::reduce_scatter";
  enter(what, in);
  check_reduce(what, in, op);
  const int64_t block = scatter_block(what, in, world_size());
  prepare_out(what, in, out, block);
  if (block == 0) return;
  if (in.dtype() == DType::BF16) {  // in f32, rounded once
    const int64_t n = in.numel();
    Tensor sum = Tensor::empty({n}, DType::F32, device()),
           mine = Tensor::empty({block}, DType::F32, device());
    cuda::convert(DType::F32, sum.raw_data(), DType::BF16, in.raw_data(), n, options_.device);
    queued("ncclReduceScatter",
           ncclReduceScatter(sum.raw_data(), mine.raw_data(), block, ncclFloat32, nccl_op(op),
                             impl_->comm, cudaStreamPerThread));
    cuda::convert(DType::BF16, out.raw_data(), DType::F32, mine.raw_data(), block, options_.device);
    return;
  }
  queued("ncclReduceScatter",
         ncclReduceScatter(in.raw_data(), out.raw_data(), block, nccl_type(in.dtype()), nccl_op(op),
                           impl_->comm, cudaStreamPerThread));
}

void NcclCommunicator::barrier() {
  enter("NcclCommunicator::barrier", impl_->barrier_flag);
  impl_->settle("ncclAllReduce (barrier)",
                ncclAllReduce(impl_->barrier_flag.raw_data(), impl_->barrier_flag.raw_data(), 1,
                              ncclFloat32, ncclSum, impl_->comm, cudaStreamPerThread));
  impl_->wait("barrier");
}

bool built_with_nccl() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessPlace& place,
                                                     NcclOptions options) {
  return std::make_unique<NcclCommunicator>(place, std::move(options));
}

void NcclCommunicator::abort(int code, const std::string& why) {
  if (impl_->comm) ncclCommAbort(impl_->comm);
  impl_->comm = nullptr;
  if (options_.host) options_.host->abort(code, why);
  report_abort(place_.rank, why);
  std::_Exit(code == 0 ? 1 : code);
}

}  // namespace attn::dist
