// The schema: the trainer's own keys around every task's (tasks/registry.h). A key two tasks
// share (the transformer's) is listed once; a task's own keys say which task has them.
#include <algorithm>
#include <stdexcept>

#include "config/config.h"
#include "tasks/registry.h"
#include "tasks/transformer_keys.h"

namespace attn::config {

namespace {


std::vector<KeySpec> trainer_head() {
  return {
      choice_key("task", "lm", "What is trained: lm (decoder LM on text), vit (image classifier) or asr (speech recognition with CTC).", {"lm", "vit", "asr"}),
      string_key("run.name", "kjv-char", "Experiment name; the default run directory is runs/<name>-<variant>-s<seed>."),
      auto_allowed(string_key("run.dir", "auto", "Run directory (auto: from run.name, the variant and the seed).")),
      int_key("run.seed", "1", "Seed of the initialisation, the data order and dropout.", 0, kMaxCount),
      int_key("run.threads", "0", "CPU threads (0: all cores).", 0, 1024),
      choice_key("run.device", "cpu", "cpu, or cuda: the GPU of this process's local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID or LOCAL_RANK, modulo the visible devices; GPU 0 when launched alone).", {"cpu", "cuda"}),
      choice_key("run.precision", "f32", "f32: every tensor in f32. bf16 (cuda only): bf16 activations and working weights, cast in each forward from f32 master weights; master weights, their gradients, AdamW's state and the loss stay f32.", {"f32", "bf16"}),
  };
}

std::vector<KeySpec> trainer_tail() {
  return {
      string_key("data.cache_dir", "data/cache", "Where the prepared corpus is cached."),
      int_key("train.steps", "2000", "Optimizer steps.", 1, kMaxCount),
      int_key("train.batch_size", "32", "Samples (sequences, images) per micro-batch.", 1, kMaxLength),
      int_key("train.grad_accum", "1", "Micro-batches per optimizer step.", 1, kMaxLength),
      float_key("train.lr", "2e-3", "Peak learning rate.", 0, 10, true),
      int_key("train.warmup_steps", "100", "Linear warm-up steps.", 0, kMaxCount),
      float_key("train.min_lr_ratio", "0.1", "Cosine decay ends at lr·min_lr_ratio.", 0, 1),
      below_max(float_key("train.beta1", "0.9", "AdamW β1.", 0, 1)),
      below_max(float_key("train.beta2", "0.95", "AdamW β2.", 0, 1)),
      float_key("train.eps", "1e-8", "AdamW ε.", 0, 1, true),
      float_key("train.weight_decay", "0.1", "Decoupled weight decay (not on norms, biases, embeddings, LayerScale).", 0, 10),
      float_key("train.clip", "1.0", "Global gradient-norm clip (0: off).", 0),
      int_key("log.every", "10", "Steps between metric rows (and progress lines).", 1, kMaxCount),
      choice_key("log.level", "info", "Least severe message logged: trace, debug, info (progress and evaluation lines, notes), warn or error. The environment variable ATTNLAB_LOG_LEVEL beats it. Rank 0 logs to stderr; in a job of several processes every rank also to <run.dir>/logs/rank-N.log.", {"trace", "debug", "info", "warn", "error"}),
      int_key("eval.every", "200", "Steps between evaluations (and at the end).", 1, kMaxCount),
      int_key("eval.batches", "20", "Validation batches per evaluation (0: the whole split).", 0, kMaxCount),
      int_key("stats.every", "100", "Steps between inside-the-model statistics of a training batch (activation kurtosis and ∞-norm, attention sink and row mass, weight kurtosis, gradient norm per layer) in metrics.jsonl (0: only at evaluations).", 0, kMaxCount),
      bool_key("stats.eval", "true", "The same statistics over the validation set at every evaluation (and their summary in summary.json)."),
      int_key("stats.attention_rows", "16", "Query rows per attention layer the attention statistics recompute (evenly spaced, the last included).", 1, kMaxLength),
      int_key("checkpoint.every", "500", "Steps between checkpoints (and at the end).", 1, kMaxCount),
      int_key("checkpoint.keep", "2", "Checkpoints kept.", 1, 1000000),
      float_key("dist.bucket_mb", "25", "Data parallelism (a job started by mpirun or srun): gradients are averaged across the ranks in buckets of about this many MiB, each as soon as its gradients are complete, overlapping the rest of the backward.", 0, 1e6, true),
      int_key("dist.zero", "0", "1: ZeRO stage 1, AdamW's state sharded across the ranks (gradients reduce-scattered, each rank updates its shard, parameters all-gathered); 0: every rank holds the whole state. No effect in a single process.", 0, 1),
      choice_key("dist.init", "mpi", "How the ranks of a CUDA job find each other for NCCL: mpi (NCCL's unique id broadcast over MPI; needs mpirun, or srun with PMI/PMIx) or file (rank 0 writes it to dist.init_file on a filesystem every node sees, for clusters where MPI does not work across nodes). CPU jobs always use MPI.", {"mpi", "file"}),
      string_key("dist.init_file", "", "dist.init=file: the rendezvous file (on a shared filesystem; it must not exist when the job starts, and rank 0 removes it once every rank has joined)."),
      float_key("dist.timeout_s", "300", "A collective that has not finished after this many seconds (a rank died or stalled) aborts the whole job, naming the rank that noticed.", 0, 1e7, true),
  };
}

void append(std::vector<KeySpec>& s, std::vector<KeySpec> keys, const std::string& task) {
  for (KeySpec& k : keys) {
    auto it = std::find_if(s.begin(), s.end(), [&](const KeySpec& e) { return e.path == k.path; });
    if (it == s.end()) {
      if (!task.empty()) k.tasks = {task};
      s.push_back(std::move(k));
    } else {
      // Two tasks may share a key only if it means the same thing to both (a key whose type,
      // default or choices differ per task would validate one task's value by the other's rule).
      if (it->type != k.type || it->default_value != k.default_value || it->choices != k.choices)
        throw std::logic_error("config key '" + k.path + "' is defined differently by task '" + task +
                               "' and by " + (it->tasks.empty() ? std::string("the shared schema") : "task '" + it->tasks[0] + "'"));
      if (!task.empty() && !it->tasks.empty()) it->tasks.push_back(task);
    }
  }
}

std::vector<KeySpec> build() {
  std::vector<KeySpec> s;
  append(s, trainer_head(), "");
  for (const std::string& name : tasks::task_names()) append(s, tasks::task_keys(name), name);
  append(s, tasks::transformer_keys(), "");
  append(s, trainer_tail(), "");
  return s;
}

}  // namespace

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> s = build();
  return s;
}

}  // namespace attn::config
