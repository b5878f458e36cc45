// The tasks the trainer can train, by the name the config's `task` key gives.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "tasks/task.h"

namespace attn::tasks {

std::vector<std::string> task_names();
// The keys only this task has (the shared transformer keys are transformer_keys()).
std::vector<config::KeySpec> task_keys(const std::string& name);
// A new task; std::logic_error for an unknown name (the schema's `task` choice guards it).
std::unique_ptr<Task> make_task(const std::string& name);

}  // namespace attn::tasks
