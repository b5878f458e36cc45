// A per-process scratch directory for a test binary, removed after its last test.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace attn::testing {

namespace scratch_detail {
inline std::filesystem::path& made() {  // the directory scratch_dir made, if any
  static std::filesystem::path dir;
  return dir;
}
struct Cleanup : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    if (!made().empty()) std::filesystem::remove_all(made(), ec);
  }
};
// Registered before main, as gtest asks of a global environment.
inline ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new Cleanup);
}  // namespace scratch_detail

// $TMPDIR (or /tmp)/<prefix><pid>, made by the first call and removed after the last test. One per
// binary: the first call's prefix names it.
inline std::filesystem::path scratch_dir(const std::string& prefix) {
  static const std::filesystem::path dir = [&] {
    std::filesystem::path d =
        std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    scratch_detail::made() = d;
    return d;
  }();
  return dir;
}

}  // namespace attn::testing
