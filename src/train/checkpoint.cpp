#include "train/checkpoint.h"

#include <xxhash.h>

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>

#include "tensor/serialize.h"
#include "train/run_files.h"
#include "util/log.h"

namespace fs = std::filesystem;

namespace attn::train {

namespace {

constexpr char kMagic[8] = {'A', 'T', 'N', 'L', 'C', 'K', 'P', 'T'};
constexpr uint32_t kVersion = 2, kHeaderBytes = 32;
const char kFormat1Magic[] = "ATTNLAB-CKPT-1";

struct Header {
  char magic[8];
  uint32_t version, header_bytes;
  uint64_t payload_bytes, checksum;
};
static_assert(sizeof(Header) == kHeaderBytes);

uint64_t checksum(std::string_view payload) { return XXH64(payload.data(), payload.size(), 0); }

bool is_format1(const std::string& file) {
  const size_t n = sizeof kFormat1Magic - 1;
  uint64_t len = 0;
  if (file.size() < 8 + n) return false;
  std::memcpy(&len, file.data(), 8);
  return len == n && file.compare(8, n, kFormat1Magic) == 0;
}

// The payload of a format-2 file, or the reason it has none.
std::string check_format2(const std::string& file, std::string_view& payload) {
  if (file.size() < kHeaderBytes)
    return fmt::format("truncated: {} bytes, less than the {}-byte header", file.size(),
                       kHeaderBytes);
  Header h;
  std::memcpy(&h, file.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
    return "not an attnlab checkpoint (bad magic)";
  if (h.version != kVersion || h.header_bytes != kHeaderBytes)
    return fmt::format("format version {} (header {} bytes); this attnlab reads versions 1 and 2",
                       h.version, h.header_bytes);
  const uint64_t have = file.size() - kHeaderBytes;
  if (have < h.payload_bytes)
    return fmt::format("truncated: {} of its {} payload bytes", have, h.payload_bytes);
  if (have > h.payload_bytes)
    return fmt::format("{} unexpected bytes after its payload", have - h.payload_bytes);
  payload = std::string_view(file).substr(kHeaderBytes);
  if (checksum(payload) != h.checksum)
    return fmt::format(
        "checksum mismatch (XXH64 {:016x}, header says {:016x}): the file is corrupt",
        checksum(payload), h.checksum);
  return "";
}

bool all_finite(const Tensor& t) {
  if (t.dtype() != DType::F32 && t.dtype() != DType::F64) return true;
  for (double x : t.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

struct Payload {
  TrainState state;
  std::vector<std::pair<std::string, Tensor>> params;
};

Payload parse_payload(std::istream& is) {
  Payload p;
  TrainState& s = p.state;
  s.step = static_cast<int64_t>(read_u64(is));
  s.data_position = read_u64(is);
  s.dropout_offset = read_u64(is);
  s.metrics_bytes = read_u64(is);
  s.elapsed_s = read_f64(is);
  s.best_val_loss = read_f64(is);
  s.tokens = static_cast<int64_t>(read_u64(is));
  const uint64_t n = read_u64(is);
  if (n > (1u << 24)) throw std::runtime_error(fmt::format("corrupt parameter count {}", n));
  for (uint64_t i = 0; i < n; ++i) {
    std::string name = read_string(is);
    p.params.push_back({std::move(name), read_tensor(is)});
  }
  return p;
}

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw CheckpointError(fmt::format("checkpoint '{}': {}", path, why));
}

}  // namespace

void save_checkpoint(const std::string& path, const nn::Module& model, const AdamW& opt,
                     const TrainState& s) {
  std::ostringstream os(std::ios::binary);
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
  const std::string payload = os.str();
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.header_bytes = kHeaderBytes;
  h.payload_bytes = payload.size();
  h.checksum = checksum(payload);
  std::string file(reinterpret_cast<const char*>(&h), sizeof h);
  write_atomic(path, file + payload);
}

std::string verify_checkpoint(const std::string& path) {
  std::string file;
  try {
    file = read_file(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  if (is_format1(file))
    return "format 1 (written before checkpoints carried a checksum): cannot be verified";
  std::string_view payload;
  return check_format2(file, payload);
}

TrainState load_checkpoint(const std::string& path, nn::Module& model, AdamW* opt) {
  std::string file;
  try {
    file = read_file(path);
  } catch (const std::exception& e) {
    throw CheckpointError(e.what());
  }
  std::string_view payload;
  if (is_format1(file)) {
    payload = std::string_view(file).substr(8 + sizeof kFormat1Magic - 1);
    logging::info("note: checkpoint '{}' is format 1 (no checksum): loaded unverified\n",
                  path);
  } else if (std::string why = check_format2(file, payload); !why.empty()) {
    refuse(path, why);
  }
  std::istringstream is{std::string(payload), std::ios::binary};
  Payload p;
  std::optional<AdamW> staged_opt;  // loaded into a copy: the real one changes only on success
  if (opt) staged_opt.emplace(*opt);
  try {
    p = parse_payload(is);
    if (opt) staged_opt->load(is);
  } catch (const std::exception& e) {
    refuse(path, e.what());
  }
  // (Without an optimizer its state is what follows the parameters; the checksum vouches for it.)
  if (opt && is.peek() != std::char_traits<char>::eof())
    refuse(path, "unexpected bytes after the optimizer state");
  ParamList params = model.parameters();
  if (p.params.size() != params.size())
    refuse(path, fmt::format("it has {} parameters, the model {}", p.params.size(), params.size()));
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, t] = p.params[i];
    if (name != params[i].name || t.shape() != params[i].value.shape() ||
        t.dtype() != params[i].value.dtype())
      refuse(path,
             fmt::format("parameter '{}' {} does not match the model's '{}' {}", name,
                         shape_str(t.shape()), params[i].name, shape_str(params[i].value.shape())));
    if (!all_finite(t)) refuse(path, fmt::format("parameter '{}' holds non-finite values", name));
  }
  if (opt && !staged_opt->state_is_finite())
    refuse(path, "the optimizer state holds non-finite values");
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& t = p.params[i].second;
    copy_bytes(params[i].value.raw_data(), params[i].value.device(), t.raw_data(), t.device(),
               t.nbytes());
  }
  if (opt) *opt = std::move(*staged_opt);
  return p.state;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".ckpt") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  auto all = list_checkpoints(dir);
  return all.empty() ? "" : all.back();
}

VerifiedCheckpoint latest_verified_checkpoint(const std::string& dir) {
  VerifiedCheckpoint v;
  auto all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string why = verify_checkpoint(*it);
    if (why.empty()) {
      v.path = *it;
      break;
    }
    v.rejected.push_back({*it, why});
  }
  return v;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  auto all = list_checkpoints(dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove(all[i]);
}

}  // namespace attn::train
