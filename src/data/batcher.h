// Batches of next-token windows for the decoder LM. Training batches are random windows whose
// start offsets are a pure function of (seed, batch position), so a resumed run reproduces the
// stream exactly; validation batches are consecutive windows from the start of the stream.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/tensor.h"

namespace attn::data {

// x, y: [B, T] I32 on the CPU; y[b, t] = token after x[b, t].
struct TokenBatch {
  Tensor x, y;
};

class TokenBatcher {
 public:
  // Throws std::invalid_argument unless batch, seq_len > 0 and the stream has at least
  // seq_len + 1 tokens.
  TokenBatcher(std::shared_ptr<const std::vector<int32_t>> tokens, int64_t batch, int64_t seq_len,
               uint64_t seed);

  TokenBatch next();  // the batch at position(), then advances position() by one
  // Rows [row_begin, row_end) of the batch at position() (a data-parallel rank's share), then
  // advances position() by one.
  TokenBatch next_rows(int64_t row_begin, int64_t row_end);
  uint64_t position() const { return position_; }  // batches served so far
  void set_position(uint64_t position) { position_ = position; }

  // Start offset of row `row` of the batch at `position`, in [0, num_offsets()): Philox
  // counter position * batch + row, key seed.
  int64_t offset(uint64_t position, int64_t row) const;
  int64_t num_offsets() const { return num_offsets_; }  // tokens - seq_len
  int64_t batch() const { return batch_; }
  int64_t seq_len() const { return seq_len_; }

 private:
  std::shared_ptr<const std::vector<int32_t>> tokens_;
  int64_t batch_, seq_len_, num_offsets_;
  uint64_t seed_;
  uint64_t position_ = 0;
};

// Consecutive non-overlapping windows: row r of batch i starts at token (i·batch + r)·seq_len.
// Only full batches are returned (at most max_batches; max_batches <= 0 means all). Throws
// std::invalid_argument when the stream is too short for a single batch.
std::vector<TokenBatch> eval_batches(const std::vector<int32_t>& tokens, int64_t batch,
                                     int64_t seq_len, int64_t max_batches);

// The first `windows` consecutive non-overlapping windows of seq_len (window w starts at token
// w·seq_len), `batch` rows per batch, the last batch holding the rest (it may have fewer rows).
// Throws std::invalid_argument when the stream has fewer than windows·seq_len + 1 tokens.
std::vector<TokenBatch> window_batches(const std::vector<int32_t>& tokens, int64_t seq_len,
                                       int64_t windows, int64_t batch);

}  // namespace attn::data
