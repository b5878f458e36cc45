// Random-window training batches (Philox offsets, resumable) and consecutive eval windows.
#include "data/batcher.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "tensor/philox.h"

namespace attn::data {

namespace {

void check_sizes(const char* who, size_t n_tokens, int64_t batch, int64_t seq_len) {
  if (batch <= 0 || seq_len <= 0)
    throw std::invalid_argument(std::string(who) + ": batch and seq_len must be positive, got " +
                                std::to_string(batch) + " and " + std::to_string(seq_len));
  if (n_tokens < static_cast<size_t>(seq_len) + 1)
    throw std::invalid_argument(std::string(who) + ": the token stream has " +
                                std::to_string(n_tokens) +
                                " tokens, fewer than seq_len + 1 = " + std::to_string(seq_len + 1));
}

// Copies the window starting at `start` into row `row` of b.x and (shifted by one) b.y.
void fill_row(const std::vector<int32_t>& tokens, int64_t start, int64_t seq_len, int64_t row,
              TokenBatch& b) {
  const int32_t* src = tokens.data() + start;
  std::copy(src, src + seq_len, b.x.data<int32_t>() + row * seq_len);
  std::copy(src + 1, src + seq_len + 1, b.y.data<int32_t>() + row * seq_len);
}

TokenBatch empty_batch(int64_t batch, int64_t seq_len) {
  return {Tensor::empty({batch, seq_len}, DType::I32), Tensor::empty({batch, seq_len}, DType::I32)};
}

}  // namespace

TokenBatcher::TokenBatcher(std::shared_ptr<const std::vector<int32_t>> tokens, int64_t batch,
                           int64_t seq_len, uint64_t seed)
    : tokens_(std::move(tokens)), batch_(batch), seq_len_(seq_len), num_offsets_(0), seed_(seed) {
  if (!tokens_) throw std::invalid_argument("TokenBatcher: null token stream");
  check_sizes("TokenBatcher", tokens_->size(), batch, seq_len);
  num_offsets_ = static_cast<int64_t>(tokens_->size()) - seq_len;
}

int64_t TokenBatcher::offset(uint64_t position, int64_t row) const {
  // 64 random bits reduced modulo the offset count: the bias is below n / 2^64, negligible.
  Philox4 r =
      philox4x32_10(position * static_cast<uint64_t>(batch_) + static_cast<uint64_t>(row), seed_);
  uint64_t bits = (static_cast<uint64_t>(r.x[1]) << 32) | r.x[0];
  return static_cast<int64_t>(bits % static_cast<uint64_t>(num_offsets_));
}

TokenBatch TokenBatcher::next() { return next_rows(0, batch_); }

TokenBatch TokenBatcher::next_rows(int64_t row_begin, int64_t row_end) {
  if (row_begin < 0 || row_end > batch_ || row_begin >= row_end)
    throw std::out_of_range("TokenBatcher: rows [" + std::to_string(row_begin) + ", " +
                            std::to_string(row_end) + ") of a batch of " + std::to_string(batch_));
  TokenBatch b = empty_batch(row_end - row_begin, seq_len_);
  for (int64_t row = row_begin; row < row_end; ++row)
    fill_row(*tokens_, offset(position_, row), seq_len_, row - row_begin, b);
  ++position_;
  return b;
}

std::vector<TokenBatch> eval_batches(const std::vector<int32_t>& tokens, int64_t batch,
                                     int64_t seq_len, int64_t max_batches) {
  check_sizes("eval_batches", tokens.size(), batch, seq_len);
  int64_t windows = (static_cast<int64_t>(tokens.size()) - 1) / seq_len;
  int64_t n = windows / batch;
  if (n == 0)
    throw std::invalid_argument(
        "eval_batches: " + std::to_string(tokens.size()) + " tokens give no full batch of " +
        std::to_string(batch) + " x " + std::to_string(seq_len) +
        " (need batch * seq_len + 1 = " + std::to_string(batch * seq_len + 1) + ")");
  if (max_batches > 0) n = std::min(n, max_batches);
  std::vector<TokenBatch> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(empty_batch(batch, seq_len));
    for (int64_t row = 0; row < batch; ++row)
      fill_row(tokens, (i * batch + row) * seq_len, seq_len, row, out.back());
  }
  return out;
}

std::vector<TokenBatch> window_batches(const std::vector<int32_t>& tokens, int64_t seq_len,
                                       int64_t windows, int64_t batch) {
  check_sizes("window_batches", tokens.size(), batch, seq_len);
  if (windows <= 0 || (static_cast<int64_t>(tokens.size()) - 1) / seq_len < windows)
    throw std::invalid_argument("window_batches: " + std::to_string(tokens.size()) +
                                " tokens do not hold " + std::to_string(windows) + " windows of " +
                                std::to_string(seq_len) + " (need windows * seq_len + 1 tokens)");
  std::vector<TokenBatch> out;
  for (int64_t first = 0; first < windows; first += batch) {
    const int64_t rows = std::min(batch, windows - first);
    out.push_back(empty_batch(rows, seq_len));
    for (int64_t row = 0; row < rows; ++row)
      fill_row(tokens, (first + row) * seq_len, seq_len, row, out.back());
  }
  return out;
}

}  // namespace attn::data
