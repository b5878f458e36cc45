#include "dist/launch_env.h"

#include <fmt/format.h>

#include <charconv>
#include <stdexcept>
#include <unordered_map>

extern char** environ;

namespace attn::dist {

namespace {

[[noreturn]] void bad(const std::string& name, const std::string& value, const std::string& want) {
  throw std::runtime_error(
      fmt::format("launcher environment: {}='{}': expected {}", name, value, want));
}

const std::string* find(const Environment& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// A non-negative decimal int, the whole string.
int parse_count(const std::string& name, const std::string& v) {
  int out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || out < 0)
    bad(name, v, "a non-negative integer");
  return out;
}

// A family is chosen by its first variable; its launcher sets all of them.
struct Family {
  const char* first;
  const char* launcher;
};

int require(const Environment& env, const std::string& name, const Family& f) {
  const std::string* v = find(env, name);
  if (!v)
    throw std::runtime_error(fmt::format(
        "launcher environment: {} is set but {} is not ({} sets both)", f.first, name, f.launcher));
  return parse_count(name, *v);
}

// SLURM_TASKS_PER_NODE: comma-separated "N" or "N(xM)" (M nodes with N tasks each), in node order.
std::vector<int> tasks_per_node(const std::string& v) {
  const std::string name = "SLURM_TASKS_PER_NODE";
  std::vector<int> per_node;
  size_t pos = 0;
  while (pos <= v.size()) {
    size_t comma = v.find(',', pos);
    std::string item = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int tasks = 0, repeat = 1;
    size_t paren = item.find("(x");
    if (paren == std::string::npos) {
      tasks = parse_count(name, item);
    } else {
      if (item.back() != ')') bad(name, v, "entries like 4 or 4(x2), comma-separated");
      tasks = parse_count(name, item.substr(0, paren));
      repeat = parse_count(name, item.substr(paren + 2, item.size() - paren - 3));
    }
    if (tasks == 0 || repeat == 0) bad(name, v, "positive task and node counts");
    per_node.insert(per_node.end(), repeat, tasks);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return per_node;
}

int slurm_local_size(const Environment& env) {
  if (const std::string* v = find(env, "SLURM_NTASKS_PER_NODE"))
    return parse_count("SLURM_NTASKS_PER_NODE", *v);
  const std::string* v = find(env, "SLURM_TASKS_PER_NODE");
  if (!v)
    throw std::runtime_error(
        "launcher environment: SLURM_PROCID is set but neither SLURM_NTASKS_PER_NODE nor "
        "SLURM_TASKS_PER_NODE is (the tasks on this node)");
  std::vector<int> per_node = tasks_per_node(*v);
  if (const std::string* id = find(env, "SLURM_NODEID")) {
    int node = parse_count("SLURM_NODEID", *id);
    if (node >= static_cast<int>(per_node.size()))
      bad("SLURM_NODEID", *id,
          fmt::format("a node index below {} (SLURM_TASKS_PER_NODE='{}')", per_node.size(), *v));
    return per_node[node];
  }
  for (int n : per_node)
    if (n != per_node[0])
      throw std::runtime_error(
          fmt::format("launcher environment: SLURM_TASKS_PER_NODE='{}' differs between nodes and "
                      "SLURM_NODEID is not set (which node is this?)",
                      *v));
  return per_node[0];
}

struct Names {
  const char *rank, *size, *local_rank, *local_size;
};

void check(const ProcessPlace& p, const Names& n) {
  if (p.world_size < 1) bad(n.size, "0", "at least 1");
  if (p.rank >= p.world_size)
    bad(n.rank, std::to_string(p.rank), fmt::format("below {}={}", n.size, p.world_size));
  if (p.local_size < 1 || p.local_size > p.world_size)
    bad(n.local_size, std::to_string(p.local_size),
        fmt::format("between 1 and {}={}", n.size, p.world_size));
  if (p.local_rank >= p.local_size)
    bad(n.local_rank, std::to_string(p.local_rank),
        fmt::format("below {}={}", n.local_size, p.local_size));
}

}  // namespace

ProcessPlace detect_process_place(const Environment& env) {
  ProcessPlace p;
  if (find(env, "OMPI_COMM_WORLD_RANK")) {
    const Family family{"OMPI_COMM_WORLD_RANK", "Open MPI's mpirun"};
    p = {require(env, "OMPI_COMM_WORLD_RANK", family), require(env, "OMPI_COMM_WORLD_SIZE", family),
         require(env, "OMPI_COMM_WORLD_LOCAL_RANK", family),
         require(env, "OMPI_COMM_WORLD_LOCAL_SIZE", family), "OMPI_COMM_WORLD_*"};
    check(p, {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
              "OMPI_COMM_WORLD_LOCAL_SIZE"});
  } else if (find(env, "SLURM_PROCID")) {
    const Family family{"SLURM_PROCID", "srun"};
    p = {require(env, "SLURM_PROCID", family), require(env, "SLURM_NTASKS", family),
         require(env, "SLURM_LOCALID", family), slurm_local_size(env), "SLURM_*"};
    check(p,
          {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
           find(env, "SLURM_NTASKS_PER_NODE") ? "SLURM_NTASKS_PER_NODE" : "SLURM_TASKS_PER_NODE"});
  } else if (find(env, "RANK")) {
    const Family family{"RANK", "torchrun"};
    p = {require(env, "RANK", family), require(env, "WORLD_SIZE", family),
         require(env, "LOCAL_RANK", family), require(env, "LOCAL_WORLD_SIZE", family),
         "RANK/WORLD_SIZE"};
    check(p, {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"});
  } else {
    p.source = "single process";
  }
  return p;
}

ProcessPlace detect_process_place() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq != std::string::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return detect_process_place(env);
}

std::optional<std::pair<int, int>> ranks_sharing_a_gpu(const std::vector<uint64_t>& gpus) {
  std::unordered_map<uint64_t, int> first_rank;
  for (int s = 0; s < static_cast<int>(gpus.size()); ++s) {
    auto [it, fresh] = first_rank.emplace(gpus[s], s);
    if (!fresh) return std::pair<int, int>(it->second, s);
  }
  return std::nullopt;
}

}  // namespace attn::dist
