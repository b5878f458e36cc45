// Binary (de)serialisation of tensors for checkpoints: a small header (magic, dtype, rank, dims)
// followed by the raw little-endian elements. Streams throw on truncation or a bad header.
#pragma once
#include <istream>
#include <ostream>

#include "tensor/tensor.h"

namespace attn {

void write_tensor(std::ostream& os, const Tensor& t);
Tensor read_tensor(std::istream& is);  // on the CPU

// Plain values, for counters and RNG state next to the tensors.
void write_u64(std::ostream& os, uint64_t v);
uint64_t read_u64(std::istream& is);
void write_f64(std::ostream& os, double v);
double read_f64(std::istream& is);
void write_string(std::ostream& os, const std::string& s);
std::string read_string(std::istream& is);

}  // namespace attn
