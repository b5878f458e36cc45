#include "train/run_files.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <sstream>

#include "tensor/serialize.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {
const char kCheckpointMagic[] = "ATTNLAB-CKPT-1";

std::vector<fs::path> checkpoints_in(const std::string& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".ckpt") out.push_back(e.path());
  std::sort(out.begin(), out.end());  // names carry a zero-padded step
  return out;
}
}  // namespace

void write_atomic(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
    f << content;
    f.flush();
    if (!f) throw std::runtime_error("write failed for '" + tmp + "' (disk full?)");
  }
  fs::rename(tmp, path);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read '" + path + "'");
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

MetricsLog::MetricsLog(const std::string& path, uint64_t keep_bytes) : bytes_(keep_bytes) {
  if (fs::exists(path)) fs::resize_file(path, keep_bytes);
  out_.open(path, std::ios::binary | std::ios::app);
  if (!out_) throw std::runtime_error("cannot open '" + path + "'");
}

void MetricsLog::write(const nlohmann::json& row) {
  std::string line = row.dump() + "\n";
  out_ << line;
  out_.flush();
  bytes_ += line.size();
}

void save_checkpoint(const std::string& path, const models::DecoderLM& model, const AdamW& opt, const TrainState& s) {
  std::ostringstream os(std::ios::binary);
  write_string(os, kCheckpointMagic);
  write_u64(os, static_cast<uint64_t>(s.step));
  write_u64(os, s.data_position);
  write_u64(os, s.dropout_offset);
  write_u64(os, s.metrics_bytes);
  write_f64(os, s.elapsed_s);
  write_f64(os, s.best_val_loss);
  write_u64(os, static_cast<uint64_t>(s.tokens));
  ParamList params = model.parameters();
  write_u64(os, params.size());
  for (const Param& p : params) {
    write_string(os, p.name);
    write_tensor(os, p.value);
  }
  opt.save(os);
  write_atomic(path, os.str());
}

TrainState load_checkpoint(const std::string& path, models::DecoderLM& model, AdamW* opt) {
  std::istringstream is(read_file(path), std::ios::binary);
  if (read_string(is) != kCheckpointMagic) throw std::runtime_error("'" + path + "' is not an attnlab checkpoint");
  TrainState s;
  s.step = static_cast<int64_t>(read_u64(is));
  s.data_position = read_u64(is);
  s.dropout_offset = read_u64(is);
  s.metrics_bytes = read_u64(is);
  s.elapsed_s = read_f64(is);
  s.best_val_loss = read_f64(is);
  s.tokens = static_cast<int64_t>(read_u64(is));
  ParamList params = model.parameters();
  uint64_t n = read_u64(is);
  if (n != params.size())
    throw std::runtime_error(fmt::format("checkpoint '{}' has {} parameters, the model {}", path, n, params.size()));
  for (Param& p : params) {
    std::string name = read_string(is);
    Tensor t = read_tensor(is);
    if (name != p.name || t.shape() != p.value.shape() || t.dtype() != p.value.dtype())
      throw std::runtime_error(fmt::format("checkpoint '{}': parameter '{}' {} does not match the model's '{}' {}", path,
                                           name, shape_str(t.shape()), p.name, shape_str(p.value.shape())));
    copy_bytes(p.value.raw_data(), p.value.device(), t.raw_data(), t.device(), t.nbytes());
  }
  if (opt) opt->load(is);
  return s;
}

std::string latest_checkpoint(const std::string& dir) {
  auto all = checkpoints_in(dir);
  return all.empty() ? "" : all.back().string();
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  auto all = checkpoints_in(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove(all[i]);
}

}  // namespace attn::train
