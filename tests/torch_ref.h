// Shared by the tests that compare against Debian's PyTorch: where the interpreter and the
// reference scripts are, whether torch imports, and running a script on a JSON file.
// Env (set by ctest): ATTNLAB_TORCH_PYTHON (default /usr/bin/python3; the pyenv python3 on PATH
// has no torch), ATTNLAB_TEST_DIR (this folder). ATTNLAB_REQUIRE_TORCH=1 (scripts/test.sh sets it)
// turns "torch missing: skipped" into a failure, since ctest counts a skip as a pass.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace attn::testing {

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::string(v) : fallback;
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string torch_python() { return env_or("ATTNLAB_TORCH_PYTHON", "/usr/bin/python3"); }

inline std::filesystem::path reference_script(const std::string& name) {
  return std::filesystem::path(env_or("ATTNLAB_TEST_DIR", std::filesystem::path(__FILE__).parent_path().string())) / name;
}

// Checked once per process (importing torch takes ~1.5 s).
inline bool torch_available() {
  static const bool ok = std::system((shell_quote(torch_python()) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

inline std::string torch_missing_message() {
  return "PyTorch is not importable by " + torch_python() +
         "; install Debian's python3-torch and libopenblas0-pthread (apt-get install python3-torch "
         "libopenblas0-pthread) or set ATTNLAB_TORCH_PYTHON to a python with torch";
}

// ATTNLAB_REQUIRE_TORCH set to anything but "" or "0".
inline bool torch_required() {
  const char* v = std::getenv("ATTNLAB_REQUIRE_TORCH");
  return v && *v && std::string(v) != "0";
}

// In a test body: when `have_torch` is false, skip with torch_missing_message(), or fail with it
// under ATTNLAB_REQUIRE_TORCH. A macro because GTEST_SKIP and FAIL return from the test itself.
#define ATTNLAB_SKIP_OR_FAIL_WITHOUT_TORCH(have_torch)                                          \
  do {                                                                                          \
    if (!(have_torch)) {                                                                        \
      if (::attn::testing::torch_required())                                                    \
        FAIL() << ::attn::testing::torch_missing_message()                                      \
               << " (ATTNLAB_REQUIRE_TORCH is set: a missing torch fails instead of skipping)"; \
      GTEST_SKIP() << ::attn::testing::torch_missing_message();                                 \
    }                                                                                           \
  } while (0)

// The command line that runs `script in out` with the torch interpreter.
inline std::string reference_command(const std::filesystem::path& script, const std::filesystem::path& in,
                                     const std::filesystem::path& out) {
  return shell_quote(torch_python()) + " " + shell_quote(script.string()) + " " + shell_quote(in.string()) + " " +
         shell_quote(out.string());
}

}  // namespace attn::testing
