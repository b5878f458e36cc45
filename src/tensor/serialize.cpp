#include "tensor/serialize.h"

#include <stdexcept>

namespace attn {

namespace {
constexpr uint32_t kTensorMagic = 0x41544e53;  // "ATNS"

void read_exact(std::istream& is, void* p, size_t n) {
  is.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
  if (static_cast<size_t>(is.gcount()) != n) throw std::runtime_error("checkpoint: truncated file");
}
}  // namespace

void write_u64(std::ostream& os, uint64_t v) { os.write(reinterpret_cast<const char*>(&v), 8); }
uint64_t read_u64(std::istream& is) {
  uint64_t v;
  read_exact(is, &v, 8);
  return v;
}
void write_f64(std::ostream& os, double v) { os.write(reinterpret_cast<const char*>(&v), 8); }
double read_f64(std::istream& is) {
  double v;
  read_exact(is, &v, 8);
  return v;
}
void write_string(std::ostream& os, const std::string& s) {
  write_u64(os, s.size());
  os.write(s.data(), static_cast<std::streamsize>(s.size()));
}
std::string read_string(std::istream& is) {
  uint64_t n = read_u64(is);
  if (n > (1u << 30)) throw std::runtime_error("checkpoint: corrupt string length");
  std::string s(n, '\0');
  read_exact(is, s.data(), n);
  return s;
}

void write_tensor(std::ostream& os, const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  uint32_t head[3] = {kTensorMagic, static_cast<uint32_t>(t.dtype()), static_cast<uint32_t>(t.dim())};
  os.write(reinterpret_cast<const char*>(head), sizeof head);
  for (int64_t d : t.shape()) write_u64(os, static_cast<uint64_t>(d));
  os.write(static_cast<const char*>(h.raw_data()), static_cast<std::streamsize>(t.nbytes()));
}

Tensor read_tensor(std::istream& is) {
  uint32_t head[3];
  read_exact(is, head, sizeof head);
  if (head[0] != kTensorMagic || head[1] > static_cast<uint32_t>(DType::I64) || head[2] > 16)
    throw std::runtime_error("checkpoint: bad tensor header");
  Shape s(head[2]);
  for (auto& d : s) d = static_cast<int64_t>(read_u64(is));
  Tensor t = Tensor::empty(s, static_cast<DType>(head[1]));
  read_exact(is, t.raw_data(), t.nbytes());
  return t;
}

}  // namespace attn
