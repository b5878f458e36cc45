#include <ostream>
#include <sstream>

#include "tensor/tensor.h"

namespace attn {

namespace {

// Prints nested brackets, eliding the middle of long dimensions with "...".
void print_rec(std::ostringstream& os, const std::vector<double>& v, const Shape& s, size_t d,
               int64_t base, int max_per_dim, bool integer) {
  if (d == s.size()) {
    if (integer) os << static_cast<int64_t>(v[base]);
    else os << v[base];
    return;
  }
  int64_t stride = 1;
  for (size_t k = d + 1; k < s.size(); ++k) stride *= s[k];
  os << "[";
  for (int64_t i = 0; i < s[d]; ++i) {
    if (s[d] > max_per_dim && i == max_per_dim / 2) {
      os << "..., ";
      i = s[d] - max_per_dim / 2 - 1;
      continue;
    }
    if (i) os << ", ";
    print_rec(os, v, s, d + 1, base + i * stride, max_per_dim, integer);
  }
  os << "]";
}

}  // namespace

std::string Tensor::str(int max_per_dim) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os.precision(6);
  os << "Tensor(";
  print_rec(os, to_vector(), shape(), 0, 0, max_per_dim, is_integer(dtype()));
  os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype())
     << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace attn
