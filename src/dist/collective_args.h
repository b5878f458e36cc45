// Argument checks shared by the communicator backends: one wording for every backend's errors.
#pragma once
#include <cstdint>

#include "dist/communicator.h"

namespace attn::dist {

// `what` names the backend and collective ("MpiCommunicator::all_reduce"). Throws
// std::invalid_argument unless t is defined, of a dtype the collectives support, and on
// `device` (CPU for MPI, the communicator's GPU for NCCL).
void check_tensor(const char* what, const Tensor& t, Device device);
// Avg of an integer tensor is refused (integer division is not an average).
void check_reduce(const char* what, const Tensor& t, ReduceOp op);
void check_root(const char* what, int root, int world_size);
// Makes `out` ready to receive `numel` elements of in's dtype on in's device: allocates it 1-D
// when undefined, else checks its element count, dtype and device, and that it is not `in`.
void prepare_out(const char* what, const Tensor& in, Tensor& out, int64_t numel);
// in's element count for reduce_scatter: divisible by world_size.
int64_t scatter_block(const char* what, const Tensor& in, int world_size);

// Prints "rank R: why" to stderr (one write, so ranks' lines do not interleave).
void report_abort(int rank, const std::string& why);

}  // namespace attn::dist
