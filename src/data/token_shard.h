// llm.c-format token shards (the .bin files of llm.c's data scripts): a header of 256 int32
// (magic 20240520, version 1, token count, the rest zero), then `count` uint16 tokens, all
// little-endian.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace attn::data {

constexpr int32_t kTokenShardMagic = 20240520;
constexpr int32_t kTokenShardVersion = 1;
constexpr size_t kTokenShardHeaderInts = 256;

// Throws std::runtime_error naming the file and the problem: missing/unreadable file, bad magic,
// bad version, negative count, truncated or over-long file.
std::vector<int32_t> load_token_shard(const std::string& path);

// Every token must be in [0, 65535]; throws std::invalid_argument otherwise (nothing written).
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens);

}  // namespace attn::data
