#include "dist/local_communicator.h"

#include <cstdlib>

#include "dist/collective_args.h"

namespace attn::dist {

// The same argument checks as the real backends, so a call that is wrong on 8 ranks is already
// wrong on one.
void LocalCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  check_tensor("LocalCommunicator::all_reduce", t, t.defined() ? t.device() : Device::cpu());
  check_reduce("LocalCommunicator::all_reduce", t, op);
}

void LocalCommunicator::broadcast(Tensor& t, int root) {
  check_tensor("LocalCommunicator::broadcast", t, t.defined() ? t.device() : Device::cpu());
  check_root("LocalCommunicator::broadcast", root, 1);
}

void LocalCommunicator::all_gather(const Tensor& in, Tensor& out) {
  check_tensor("LocalCommunicator::all_gather", in, in.defined() ? in.device() : Device::cpu());
  prepare_out("LocalCommunicator::all_gather", in, out, in.numel());
  copy_bytes(out.raw_data(), out.device(), in.raw_data(), in.device(), in.nbytes());
}

void LocalCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const char* what = "LocalCommunicator::reduce_scatter";
  check_tensor(what, in, in.defined() ? in.device() : Device::cpu());
  check_reduce(what, in, op);
  prepare_out(what, in, out, scatter_block(what, in, 1));
  copy_bytes(out.raw_data(), out.device(), in.raw_data(), in.device(), in.nbytes());
}

void LocalCommunicator::abort(int code, const std::string& why) {
  report_abort(0, why);
  std::_Exit(code);
}

}  // namespace attn::dist
