// Reader and writer for llm.c token shards (header of 256 int32, then uint16 tokens).
#include "data/token_shard.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace attn::data {

namespace {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; add byte swapping for this host");

constexpr size_t kHeaderBytes = kTokenShardHeaderInts * sizeof(int32_t);

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("token shard '" + path + "': " + what);
}

std::vector<int32_t> read_header(std::ifstream& in, const std::string& path, size_t file_size) {
  if (file_size < kHeaderBytes)
    fail(path, "truncated: " + std::to_string(file_size) + " bytes, shorter than the " +
                   std::to_string(kHeaderBytes) + "-byte header");
  std::vector<int32_t> header(kTokenShardHeaderInts);
  in.read(reinterpret_cast<char*>(header.data()), kHeaderBytes);
  if (!in) fail(path, "read error in the header");
  if (header[0] != kTokenShardMagic)
    fail(path, "bad magic " + std::to_string(header[0]) + " (expected " +
                   std::to_string(kTokenShardMagic) + "); not an llm.c token shard");
  if (header[1] != kTokenShardVersion)
    fail(path, "bad version " + std::to_string(header[1]) + " (expected " +
                   std::to_string(kTokenShardVersion) + ", uint16 tokens)");
  if (header[2] < 0) fail(path, "negative token count " + std::to_string(header[2]));
  return header;
}

}  // namespace

std::vector<int32_t> load_token_shard(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));
  auto file_size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  int32_t count = read_header(in, path, file_size)[2];
  size_t want = kHeaderBytes + static_cast<size_t>(count) * sizeof(uint16_t);
  if (file_size < want)
    fail(path, "truncated: the header promises " + std::to_string(count) + " tokens (" +
                   std::to_string(want) + " bytes) but the file has " + std::to_string(file_size) +
                   " bytes");
  if (file_size > want)
    fail(path, "size mismatch: the header promises " + std::to_string(count) + " tokens (" +
                   std::to_string(want) + " bytes) but the file has " + std::to_string(file_size) +
                   " bytes");
  std::vector<uint16_t> raw(count);
  in.read(reinterpret_cast<char*>(raw.data()),
          static_cast<std::streamsize>(count * sizeof(uint16_t)));
  if (!in) fail(path, "read error in the tokens");
  return std::vector<int32_t>(raw.begin(), raw.end());
}

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument("write_token_shard: " + std::to_string(tokens.size()) +
                                " tokens do not fit the int32 count of the header");
  std::vector<uint16_t> raw(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > 65535)
      throw std::invalid_argument("write_token_shard: token " + std::to_string(tokens[i]) +
                                  " at position " + std::to_string(i) +
                                  " does not fit in uint16 (0..65535)");
    raw[i] = static_cast<uint16_t>(tokens[i]);
  }
  std::vector<int32_t> header(kTokenShardHeaderInts, 0);
  header[0] = kTokenShardMagic;
  header[1] = kTokenShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, std::string("cannot create: ") + std::strerror(errno));
  out.write(reinterpret_cast<const char*>(header.data()), kHeaderBytes);
  out.write(reinterpret_cast<const char*>(raw.data()),
            static_cast<std::streamsize>(raw.size() * sizeof(uint16_t)));
  if (!out.flush()) fail(path, "write error");
}

}  // namespace attn::data
