// Adding a task: a class implementing tasks/task.h in src/tasks/<name>/, its keys, and a line
// in each function below (and its name in the schema's `task` choice, src/train/schema.cpp).
#include "tasks/registry.h"

#include <stdexcept>

#include "tasks/asr/asr_task.h"
#include "tasks/lm/lm_task.h"
#include "tasks/vit/vit_task.h"

namespace attn::tasks {

std::vector<std::string> task_names() { return {"lm", "vit", "asr"}; }

std::vector<config::KeySpec> task_keys(const std::string& name) {
  if (name == "lm") return lm_keys();
  if (name == "vit") return vit_keys();
  if (name == "asr") return asr_keys();
  throw std::logic_error("no task '" + name + "'");
}

std::unique_ptr<Task> make_task(const std::string& name) {
  if (name == "lm") return std::make_unique<LmTask>();
  if (name == "vit") return std::make_unique<VitTask>();
  if (name == "asr") return std::make_unique<AsrTask>();
  throw std::logic_error("no task '" + name + "'");
}

}  // namespace attn::tasks
