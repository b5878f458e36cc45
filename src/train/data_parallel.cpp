#include "train/data_parallel.h"

#include <xxhash.h>

#include <fmt/format.h>

#include <stdexcept>
#include <vector>

#include "dist/launch_env.h"
#include "dist/local_communicator.h"
#include "dist/make_communicator.h"
#include "train/job_communicator.h"

namespace attn::train {

std::unique_ptr<dist::Communicator> open_job(const config::Config& c,
                                             const dist::ProcessPlace& place, Device device) {
  if (place.world_size == 1) return std::make_unique<dist::LocalCommunicator>();
  dist::CommOptions o;
  o.device = device;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(c.get_float("dist.timeout_s") * 1000));
  o.init = dist::parse_init_method(c.get_string("dist.init"));
  o.init_file = c.get_string("dist.init_file");
  return std::make_unique<JobCommunicator>(dist::make_communicator(place, o),
                                           c.get_float("dist.timeout_s"), device);
}

void broadcast_parameters(dist::Communicator& comm, const ParamList& params) {
  if (comm.world_size() == 1) return;
  for (const Param& p : params) {
    Tensor t = p.value;
    comm.broadcast(t, 0);
  }
  check_parameters_equal(comm, params);
}

void check_parameters_equal(dist::Communicator& comm, const ParamList& params) {
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  for (const Param& p : params) {
    const Tensor host = p.value.device().is_cpu() ? p.value : p.value.to(Device::cpu());
    XXH64_update(h, host.raw_data(), host.nbytes());
  }
  const auto mine = static_cast<int64_t>(XXH64_digest(h));
  XXH64_freeState(h);
  Tensor one = from_vector({0}, {1}, {DType::I64});
  one.data<int64_t>()[0] = mine;  // the bits, not a double's rounding of them
  Tensor all = Tensor::empty({comm.world_size()}, DType::I64);
  comm.all_gather(one, all);
  std::vector<int> differ;
  for (int r = 1; r < comm.world_size(); ++r)
    if (all.data<int64_t>()[r] != all.data<int64_t>()[0]) differ.push_back(r);
  if (!differ.empty())
    throw std::runtime_error(
        fmt::format("the parameters of rank(s) {} differ from rank 0's after the broadcast "
                    "(checksums of every parameter's bytes)",
                    fmt::join(differ, ", ")));
}

tasks::Shard task_shard(dist::Communicator& comm) {
  tasks::Shard s;
  s.rank = comm.rank();
  s.world = comm.world_size();
  if (s.world > 1)
    s.sum = [&comm](std::vector<double>& v) {
      Tensor t = from_vector(v, {static_cast<int64_t>(v.size())}, {DType::F64});
      comm.all_reduce(t, dist::ReduceOp::Sum);
      v = t.to_vector();
    };
  return s;
}

int first_nonzero(dist::Communicator& comm, int code) {
  if (comm.world_size() == 1) return code;
  Tensor one = from_vector({static_cast<double>(code)}, {1}, {DType::I32});
  Tensor all = Tensor::empty({comm.world_size()}, DType::I32);
  comm.all_gather(one, all);
  for (int r = 0; r < comm.world_size(); ++r)
    if (all.data<int32_t>()[r] != 0) return all.data<int32_t>()[r];
  return 0;
}

double mean_over_ranks(dist::Communicator& comm, double x) {
  if (comm.world_size() == 1) return x;
  Tensor t = from_vector({x}, {1}, {DType::F64});
  comm.all_reduce(t, dist::ReduceOp::Avg);
  return t.item();
}

}  // namespace attn::train
