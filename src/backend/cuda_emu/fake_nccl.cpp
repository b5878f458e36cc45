// The fake NCCL of the emulated build (include/nccl.h): NCCL's collectives on emulated device
// memory, carried by MPI on the host, so that the NCCL backend's own code (src/dist/
// nccl_communicator.cpp) runs under mpirun on a machine without a GPU. Each collective copies
// its device input to the host (cudaMemcpy, which checks that it is device memory), runs the MPI
// collective, and copies the result back. What it checks beyond MPI: that every rank was given
// the same unique id, and the ranks and counts as NCCL does.
//
// ATTNLAB_FAKE_NCCL_ASYNC_ERROR=1 in the environment makes the next collective do nothing and
// leave ncclRemoteError as the communicator's async error, as a peer that died mid-collective
// would: the test of the backend's error path.
#include <mpi.h>
#include <nccl.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

struct ncclComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, nranks = 1;
  bool blocking = true;
  ncclResult_t async = ncclSuccess;
  std::string last;
};

namespace {

constexpr char kMagic[] = "attnlab-fake-nccl";

thread_local std::string t_last;  // errors before there is a communicator

ncclResult_t fail(ncclComm* c, ncclResult_t r, const std::string& why) {
  (c ? c->last : t_last) = "fake NCCL: " + why;
  return r;
}

// A call that succeeded: a non-blocking communicator answers "in progress", settled later.
ncclResult_t done(const ncclComm* c) { return c->blocking ? ncclSuccess : ncclInProgress; }

bool mpi_ready() {
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  return inited && !finalized;
}

// A job whose NCCL id came through a file (dist.init=file) has not initialised MPI: the fake's
// transport does, as NCCL brings its own, and finalises it at exit.
struct OwnMpi {
  bool owned = false;
  OwnMpi() {
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited)
      owned = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) == MPI_SUCCESS;
  }
  ~OwnMpi() {
    int finalized = 1;
    if (owned && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
  }
};

bool ensure_mpi() {
  static OwnMpi mpi;
  return mpi_ready();
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
  }
  return 0;
}

// The MPI type of a reduction; MPI_DATATYPE_NULL for what the fake does not reduce (16-bit
// floats: attnlab reduces bf16 in f32 and never hands NCCL a bf16 sum).
MPI_Datatype reduce_type(ncclDataType_t t) {
  switch (t) {
    case ncclInt32:
      return MPI_INT32_T;
    case ncclInt64:
      return MPI_INT64_T;
    case ncclFloat32:
      return MPI_FLOAT;
    case ncclFloat64:
      return MPI_DOUBLE;
    default:
      return MPI_DATATYPE_NULL;
  }
}

template <class T>
void divide(void* p, size_t n, int by) {
  T* v = static_cast<T*>(p);
  for (size_t i = 0; i < n; ++i) v[i] /= static_cast<T>(by);
}

void average(void* p, size_t n, ncclDataType_t t, int by) {
  if (t == ncclFloat32) divide<float>(p, n, by);
  if (t == ncclFloat64) divide<double>(p, n, by);
  if (t == ncclInt32) divide<int32_t>(p, n, by);  // NCCL's integer average truncates
  if (t == ncclInt64) divide<int64_t>(p, n, by);
}

// Checks shared by every collective; ncclSuccess when the call may go ahead.
ncclResult_t begin(ncclComm* c, size_t count, ncclDataType_t type) {
  if (!c || c->comm == MPI_COMM_NULL)
    return fail(c, ncclInvalidArgument, "no communicator (aborted?)");
  if (c->async != ncclSuccess) return fail(c, ncclInvalidUsage, "the communicator has an error");
  if (type_size(type) == 0) return fail(c, ncclInvalidArgument, "unknown data type");
  if (count * static_cast<size_t>(c->nranks) > static_cast<size_t>(INT_MAX))
    return fail(c, ncclInvalidArgument, "count too large for the fake's MPI calls");
  const char* inject = std::getenv("ATTNLAB_FAKE_NCCL_ASYNC_ERROR");
  if (inject && std::strcmp(inject, "1") == 0) {
    c->async = ncclRemoteError;
    c->last = "fake NCCL: a remote rank failed (ATTNLAB_FAKE_NCCL_ASYNC_ERROR=1)";
    return ncclInProgress;  // queued; the error shows asynchronously
  }
  return ncclSuccess;
}

std::vector<char> to_host(const void* dev, size_t bytes) {
  std::vector<char> h(bytes);
  if (bytes) cudaMemcpy(h.data(), dev, bytes, cudaMemcpyDeviceToHost);
  return h;
}

ncclResult_t to_device(ncclComm* c, void* dev, const std::vector<char>& h) {
  if (!h.empty() && cudaMemcpy(dev, h.data(), h.size(), cudaMemcpyHostToDevice) != cudaSuccess)
    return fail(c, ncclUnhandledCudaError, "cudaMemcpy to the device failed");
  return done(c);
}

ncclResult_t mpi(ncclComm* c, int rc, const char* call) {
  if (rc == MPI_SUCCESS) return ncclSuccess;
  c->async = ncclSystemError;
  return fail(c, ncclSystemError, std::string(call) + " failed");
}

// The MPI type a reduction of `type` sums in, or the error the real NCCL would not give but
// this fake cannot do (a type without a reduction here, an op other than sum or average).
ncclResult_t reduction(ncclComm_t c, ncclDataType_t type, ncclRedOp_t op, MPI_Datatype* mt) {
  *mt = reduce_type(type);
  if (*mt == MPI_DATATYPE_NULL) return fail(c, ncclInvalidArgument, "no reduction of this data type");
  if (op != ncclSum && op != ncclAvg) return fail(c, ncclInvalidArgument, "only ncclSum and ncclAvg");
  return ncclSuccess;
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t c) { return (c ? c->last : t_last).c_str(); }

ncclResult_t ncclGetVersion(int* v) {
  *v = NCCL_MAJOR * 10000 + NCCL_MINOR * 100 + NCCL_PATCH;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kMagic, sizeof kMagic);
  std::random_device rd;
  for (size_t i = sizeof kMagic; i < sizeof id->internal; ++i)
    id->internal[i] = static_cast<char>(rd());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  *out = nullptr;
  if (!ensure_mpi())
    return fail(nullptr, ncclInvalidUsage, "MPI would not initialise (run under mpirun)");
  if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0)
    return fail(nullptr, ncclInvalidArgument, "not a unique id from ncclGetUniqueId");
  int world_rank = -1, world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (nranks != world_size || rank != world_rank)
    return fail(nullptr, ncclInvalidArgument,
                "rank " + std::to_string(rank) + " of " + std::to_string(nranks) +
                    " is not MPI's rank " + std::to_string(world_rank) + " of " +
                    std::to_string(world_size));
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  c->blocking = !config || config->blocking != 0;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS ||
      MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN) != MPI_SUCCESS) {
    delete c;
    return fail(nullptr, ncclSystemError, "MPI_Comm_dup failed");
  }
  // Every rank must hold rank 0's id: the bootstrap under test.
  ncclUniqueId root = id;
  int same = 0, mine = 0;
  if (MPI_Bcast(root.internal, sizeof root.internal, MPI_BYTE, 0, c->comm) != MPI_SUCCESS) {
    delete c;
    return fail(nullptr, ncclSystemError, "MPI_Bcast of the unique id failed");
  }
  mine = std::memcmp(root.internal, id.internal, sizeof id.internal) == 0;
  MPI_Allreduce(&mine, &same, 1, MPI_INT, MPI_LAND, c->comm);
  if (!same) {
    MPI_Comm_free(&c->comm);
    delete c;
    return fail(nullptr, ncclInvalidUsage, "the ranks were given different unique ids");
  }
  *out = c;
  return done(c);
}

ncclResult_t ncclCommInitRank(ncclComm_t* out, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(out, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommFinalize(ncclComm_t c) {
  if (!c) return fail(c, ncclInvalidArgument, "no communicator");
  return done(c);
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return ncclInvalidArgument;
  if (c->comm != MPI_COMM_NULL && mpi_ready()) MPI_Comm_free(&c->comm);
  delete c;
  return ncclSuccess;
}

// A real abort frees the communicator without waiting for its peers; so does this one (no
// MPI_Comm_free, which is collective).
ncclResult_t ncclCommAbort(ncclComm_t c) {
  delete c;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t* e) {
  if (!c) return ncclInvalidArgument;
  *e = c->async;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t) {
  if (ncclResult_t r = begin(c, count, type); r != ncclSuccess) return r;
  MPI_Datatype mt = MPI_DATATYPE_NULL;
  if (ncclResult_t r = reduction(c, type, op, &mt); r != ncclSuccess) return r;
  std::vector<char> h = to_host(send, count * type_size(type));
  if (ncclResult_t r = mpi(
          c, MPI_Allreduce(MPI_IN_PLACE, h.data(), static_cast<int>(count), mt, MPI_SUM, c->comm),
          "MPI_Allreduce");
      r != ncclSuccess)
    return r;
  if (op == ncclAvg) average(h.data(), count, type, c->nranks);
  return to_device(c, recv, h);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t c, cudaStream_t) {
  if (ncclResult_t r = begin(c, count, type); r != ncclSuccess) return r;
  if (root < 0 || root >= c->nranks) return fail(c, ncclInvalidArgument, "root out of range");
  const size_t bytes = count * type_size(type);
  std::vector<char> h = c->rank == root ? to_host(send, bytes) : std::vector<char>(bytes);
  if (ncclResult_t r = mpi(c, MPI_Bcast(h.data(), static_cast<int>(bytes), MPI_BYTE, root, c->comm),
                           "MPI_Bcast");
      r != ncclSuccess)
    return r;
  return to_device(c, recv, h);
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclComm_t c, cudaStream_t) {
  if (ncclResult_t r = begin(c, count, type); r != ncclSuccess) return r;
  const int bytes = static_cast<int>(count * type_size(type));
  std::vector<char> mine = to_host(send, bytes), all(static_cast<size_t>(bytes) * c->nranks);
  if (ncclResult_t r =
          mpi(c, MPI_Allgather(mine.data(), bytes, MPI_BYTE, all.data(), bytes, MPI_BYTE, c->comm),
              "MPI_Allgather");
      r != ncclSuccess)
    return r;
  return to_device(c, recv, all);
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t count, ncclDataType_t type,
                               ncclRedOp_t op, ncclComm_t c, cudaStream_t) {
  if (ncclResult_t r = begin(c, count, type); r != ncclSuccess) return r;
  MPI_Datatype mt = MPI_DATATYPE_NULL;
  if (ncclResult_t r = reduction(c, type, op, &mt); r != ncclSuccess) return r;
  std::vector<char> all = to_host(send, count * c->nranks * type_size(type)),
                    mine(count * type_size(type));
  if (ncclResult_t r = mpi(c,
                           MPI_Reduce_scatter_block(all.data(), mine.data(),
                                                    static_cast<int>(count), mt, MPI_SUM, c->comm),
                           "MPI_Reduce_scatter_block");
      r != ncclSuccess)
    return r;
  if (op == ncclAvg) average(mine.data(), count, type, c->nranks);
  return to_device(c, recv, mine);
}
