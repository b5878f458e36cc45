// attnlab: the command-line entry point.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "backend/cuda/cuda_api.h"

int main(int argc, char** argv) {
  CLI::App app{"attnlab: train transformers with different attention mechanisms and compare them"};
  app.require_subcommand(1);

  auto* info = app.add_subcommand("info", "Print the build configuration and visible devices");
  info->callback([] {
    std::printf("attnlab: CUDA backend %s, CUDA devices visible: %d\n",
                attn::cuda::built_with_cuda() ? "built" : "not built", attn::cuda::device_count());
  });

  auto* train = app.add_subcommand("train", "Train a model from a config (not implemented yet)");
  train->allow_extras();
  train->callback([] {
    std::printf("attnlab train: no experiment yet (the transformer stack and trainer land with "
                "the LM issue)\n");
  });

  CLI11_PARSE(app, argc, argv);
  return 0;
}
