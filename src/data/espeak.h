// espeak-ng, the text-to-speech program the synthetic speech corpus is made with (Debian package
// espeak-ng), run as a child process.
#pragma once
#include <string>

namespace attn::data {

struct EspeakInstall {
  std::string version, data_dir;  // "1.51", "/usr/lib/x86_64-linux-gnu/espeak-ng-data"
};

// From `espeak-ng --version`; throws std::runtime_error when espeak-ng cannot be run (naming the
// Debian package) or its output cannot be parsed.
EspeakInstall espeak_install();

// Runs `espeak-ng -v voice -s rate -p pitch -w wav_path text` (fork+exec, no shell). Throws
// std::runtime_error naming the command when it cannot start or exits non-zero. espeak-ng
// writes 16-bit mono WAV at 22050 Hz.
void espeak_to_wav(const std::string& text, const std::string& voice, int rate, int pitch,
                   const std::string& wav_path);

}  // namespace attn::data
