// Speech corpora: lists of utterances (audio file, transcript, speaker) from a JSONL manifest or a
// LibriSpeech-format folder. Only the lists; the audio is read later with read_audio.
#pragma once
#include <string>
#include <vector>

namespace attn::data {

struct Utterance {
  std::string id, audio_path /*absolute*/, transcript, speaker;
  double duration_s = 0;
};

// One JSON object per line (blank lines skipped) with at least "id", "path" (absolute, or
// relative to the manifest's folder) and "transcript" (strings); optional "speaker" (or "voice")
// and "duration" (seconds, a number; taken from the audio header when absent or null). Other
// fields are ignored. Throws std::runtime_error naming the manifest, the line number and the key
// for malformed JSON, a missing or mistyped key, or an audio file that does not exist.
std::vector<Utterance> read_manifest(const std::string& jsonl_path);

// LibriSpeech layout: dir/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt, each line "UTTID TEXT"
// (UTTID = SPEAKER-CHAPTER-N), audio dir/SPEAKER/CHAPTER/UTTID.flac; speaker = SPEAKER; duration
// from the FLAC header. Sorted by id. Throws naming the file and line for a malformed line or a
// missing flac, and when dir holds no .trans.txt at all.
std::vector<Utterance> read_librispeech(const std::string& dir);

// A folder: read_librispeech; a .jsonl file: read_manifest; anything else is an error.
std::vector<Utterance> read_speech_corpus(const std::string& path);

}  // namespace attn::data
