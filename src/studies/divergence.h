// A run that diverged: its trainer stopped on a non-finite loss or gradient (exit 3), leaving the
// row {"error": "non-finite loss or gradient", "step": N} last in its metrics.jsonl and no
// summary.json. To a study that is a result (a stability sweep over lr), not a failure: the sweep
// keeps such a run instead of resuming it into the same divergence, and the report counts it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace attn::studies {

// `attnlab train`'s exit code for a non-finite loss or gradient (src/cli/main.cpp).
inline constexpr int kDivergedExit = 3;

// The step N at which the run in `dir` diverged; nullopt when it has a summary.json, or its
// metrics.jsonl does not end with the trainer's non-finite row (a resume truncates that row away).
std::optional<int64_t> diverged_at(const std::string& dir);

}  // namespace attn::studies
