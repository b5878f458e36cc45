#include "dist/mpi_communicator.h"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "dist/collective_args.h"

namespace attn::dist {

namespace {

[[noreturn]] void mpi_failed(const char* call, int rc, int rank) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
  throw std::runtime_error(
      fmt::format("{} failed on rank {}: {}", call, rank,
                  len > 0 ? std::string(msg, len) : "error " + std::to_string(rc)));
}

void check(int rc, const char* call, int rank) {
  if (rc != MPI_SUCCESS) mpi_failed(call, rc, rank);
}

// Initialises MPI once per process; finalises it at exit if it was this code that initialised it.
struct MpiRuntime {
  bool owned = false;
  MpiRuntime() {
    int inited = 0, provided = 0;
    check(MPI_Initialized(&inited), "MPI_Initialized", -1);
    if (!inited) {
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread",
            -1);
      owned = true;
    } else {
      check(MPI_Query_thread(&provided), "MPI_Query_thread", -1);
    }
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
          -1);
    if (provided < MPI_THREAD_SERIALIZED)
      throw std::runtime_error(fmt::format(
          "MPI_Init_thread: this MPI gives thread level {}, attnlab needs MPI_THREAD_SERIALIZED "
          "(collectives from any thread, one at a time)",
          provided));
  }
  ~MpiRuntime() {
    int finalized = 1;
    if (owned && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
  }
};

void ensure_mpi() { static MpiRuntime runtime; }

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::BF16:
      return MPI_UINT16_T;  // moved, never reduced as such (see all_reduce)
    case DType::I32:
      return MPI_INT32_T;
    case DType::I64:
      return MPI_INT64_T;
  }
  throw std::invalid_argument("MpiCommunicator: unknown dtype");
}

// MPI counts are int: larger buffers go in chunks of this many elements.
constexpr int64_t kChunk = int64_t{1} << 30;

int as_count(const char* what, int64_t n) {
  if (n > INT_MAX)
    throw std::invalid_argument(
        fmt::format("{}: {} elements per rank, MPI takes at most {}", what, n, INT_MAX));
  return static_cast<int>(n);
}

std::vector<float> to_f32(const Tensor& t) {
  const bf16* p = t.data<bf16>();
  std::vector<float> out(t.numel());
  for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_float(p[i]);
  return out;
}

void round_into(Tensor& t, const std::vector<float>& v) {
  bf16* p = t.data<bf16>();
  for (size_t i = 0; i < v.size(); ++i) p[i] = float_to_bf16(v[i]);
}

template <class T>
void divide(T* p, int64_t n, int by) {
  for (int64_t i = 0; i < n; ++i) p[i] /= static_cast<T>(by);
}

// Avg: the sum divided by world size, in the dtype the sum was taken in.
void finish_avg(void* p, DType t, int64_t n, int world_size) {
  if (t == DType::F32) divide(static_cast<float*>(p), n, world_size);
  if (t == DType::F64) divide(static_cast<double*>(p), n, world_size);
}

}  // namespace

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  void check(int rc, const char* call) const { dist::check(rc, call, rank); }
};

MpiCommunicator::MpiCommunicator(const ProcessPlace& place) : place_(place), impl_(new Impl) {
  if (place.source != "OMPI_COMM_WORLD_*" && place.source != "SLURM_*")
    throw std::runtime_error(fmt::format(
        "the MPI backend needs a job started by mpirun or srun; this process's place comes from "
        "{} (rank {} of {}): start it with mpirun -np N, or srun with MPI support (--mpi=pmix), "
        "or for CUDA tensors without MPI use dist.init=file",
        place.source, place.rank, place.world_size));
  ensure_mpi();
  impl_->rank = place.rank;
  int rank = -1, size = 0;
  impl_->check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
  impl_->check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  if (rank != place.rank || size != place.world_size)
    throw std::runtime_error(fmt::format(
        "MPI sees rank {} of {}, but the environment ({}) says rank {} of {}: was this process "
        "started by the same launcher as its MPI library (mpirun, or srun --mpi=pmix)?",
        rank, size, place.source, place.rank, place.world_size));
  impl_->check(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm), "MPI_Comm_dup");
  impl_->check(MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 1;
  if (impl_->comm != MPI_COMM_NULL && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized)
    MPI_Comm_free(&impl_->comm);
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  const char* what = "MpiCommunicator::all_reduce";
  check_tensor(what, t, Device::cpu());
  check_reduce(what, t, op);
  const int64_t n = t.numel();
  if (t.dtype() == DType::BF16) {  // in f32, rounded once
    std::vector<float> sum = to_f32(t);
    for (int64_t at = 0; at < n; at += kChunk)
      impl_->check(
          MPI_Allreduce(MPI_IN_PLACE, sum.data() + at, static_cast<int>(std::min(kChunk, n - at)),
                        MPI_FLOAT, MPI_SUM, impl_->comm),
          "MPI_Allreduce");
    if (op == ReduceOp::Avg) finish_avg(sum.data(), DType::F32, n, world_size());
    round_into(t, sum);
    return;
  }
  char* p = static_cast<char*>(t.raw_data());
  const size_t elem = dtype_size(t.dtype());
  for (int64_t at = 0; at < n; at += kChunk)
    impl_->check(
        MPI_Allreduce(MPI_IN_PLACE, p + at * elem, static_cast<int>(std::min(kChunk, n - at)),
                      mpi_type(t.dtype()), MPI_SUM, impl_->comm),
        "MPI_Allreduce");
  if (op == ReduceOp::Avg) finish_avg(p, t.dtype(), n, world_size());
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  const char* what = "MpiCommunicator::broadcast";
  check_tensor(what, t, Device::cpu());
  check_root(what, root, world_size());
  char* p = static_cast<char*>(t.raw_data());
  const int64_t bytes = static_cast<int64_t>(t.nbytes());
  for (int64_t at = 0; at < bytes; at += kChunk)
    impl_->check(MPI_Bcast(p + at, static_cast<int>(std::min(kChunk, bytes - at)), MPI_BYTE, root,
                           impl_->comm),
                 "MPI_Bcast");
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const char* what = "MpiCommunicator::all_gather";
  check_tensor(what, in, Device::cpu());
  const int n = as_count(what, in.numel());
  prepare_out(what, in, out, in.numel() * world_size());
  const MPI_Datatype type = mpi_type(in.dtype());
  impl_->check(MPI_Allgather(in.raw_data(), n, type, out.raw_data(), n, type, impl_->comm),
               "MPI_Allgather");
}

void MpiCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const char* what = "MpiCommunicator::reduce_scatter";
  check_tensor(what, in, Device::cpu());
  check_reduce(what, in, op);
  const int64_t block = scatter_block(what, in, world_size());
  const int count = as_count(what, block);
  prepare_out(what, in, out, block);
  if (in.dtype() == DType::BF16) {  // in f32, rounded once
    std::vector<float> sum = to_f32(in), mine(block);
    impl_->check(
        MPI_Reduce_scatter_block(sum.data(), mine.data(), count, MPI_FLOAT, MPI_SUM, impl_->comm),
        "MPI_Reduce_scatter_block");
    if (op == ReduceOp::Avg) finish_avg(mine.data(), DType::F32, block, world_size());
    round_into(out, mine);
    return;
  }
  impl_->check(MPI_Reduce_scatter_block(in.raw_data(), out.raw_data(), count, mpi_type(in.dtype()),
                                        MPI_SUM, impl_->comm),
               "MPI_Reduce_scatter_block");
  if (op == ReduceOp::Avg) finish_avg(out.raw_data(), out.dtype(), block, world_size());
}

void MpiCommunicator::barrier() { impl_->check(MPI_Barrier(impl_->comm), "MPI_Barrier"); }

void MpiCommunicator::abort(int code, const std::string& why) {
  report_abort(rank(), why);
  MPI_Abort(impl_->comm != MPI_COMM_NULL ? impl_->comm : MPI_COMM_WORLD, code == 0 ? 1 : code);
  std::_Exit(code == 0 ? 1 : code);  // MPI_Abort does not return; should it, still end now
}

}  // namespace attn::dist
