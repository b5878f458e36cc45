#include "dist/collective_args.h"

#include <fmt/format.h>
#include <unistd.h>

#include <stdexcept>

namespace attn::dist {

void check_tensor(const char* what, const Tensor& t, Device device) {
  if (!t.defined()) throw std::invalid_argument(fmt::format("{}: undefined tensor", what));
  if (t.device() != device)
    throw std::invalid_argument(fmt::format("{}: tensor on {}, this communicator works on {}", what,
                                            t.device().str(), device.str()));
}

void check_reduce(const char* what, const Tensor& t, ReduceOp op) {
  if (op == ReduceOp::Avg && is_integer(t.dtype()))
    throw std::invalid_argument(
        fmt::format("{}: Avg of a {} tensor (integer division is not an average; use Sum)", what,
                    dtype_name(t.dtype())));
}

void check_root(const char* what, int root, int world_size) {
  if (root < 0 || root >= world_size)
    throw std::invalid_argument(fmt::format("{}: root {} is not a rank of this job (world size {})",
                                            what, root, world_size));
}

void prepare_out(const char* what, const Tensor& in, Tensor& out, int64_t numel) {
  if (!out.defined()) {
    out = Tensor::empty({numel}, in.dtype(), in.device());
    return;
  }
  if (out.numel() != numel || out.dtype() != in.dtype() || out.device() != in.device())
    throw std::invalid_argument(
        fmt::format("{}: out is {} {} on {}; expected {} elements of {} on {}", what,
                    shape_str(out.shape()), dtype_name(out.dtype()), out.device().str(), numel,
                    dtype_name(in.dtype()), in.device().str()));
  if (out.impl().storage == in.impl().storage)
    throw std::invalid_argument(fmt::format("{}: out shares its storage with in", what));
}

int64_t scatter_block(const char* what, const Tensor& in, int world_size) {
  if (in.numel() % world_size != 0)
    throw std::invalid_argument(fmt::format("{}: {} elements do not split evenly over {} ranks",
                                            what, in.numel(), world_size));
  return in.numel() / world_size;
}

void report_abort(int rank, const std::string& why) {
  const std::string line = fmt::format("rank {}: {}\n", rank, why);
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace attn::dist
