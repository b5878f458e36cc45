// A study's grid file (docs/studies.md) and its expansion into runs: base config × the product
// of the axes × seeds. An axis is one key and its values, or a zip of keys whose values move
// together. Each run gets a stable, readable name from its axis values and seed
// ("variant=sigmoid,position=rope,s1"): short key names (the last path component, more of the
// path where two would collide), values sanitised for a file name, in the grid's axis order.
// Errors (ConfigError) name the grid file and the entry; nothing here touches a run directory.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace attn::studies {

struct GridAxis {
  std::vector<std::string> keys;                 // one key, or the keys of a zip
  std::vector<std::vector<std::string>> values;  // [value index][key index], YAML scalar text
};

struct Grid {
  std::string path;               // the grid file
  std::string text;               // its contents, for the report
  std::string name;               // `name:`, default the file's stem
  std::string base;               // `base:`, a config file (relative to the current directory)
  std::vector<std::string> sets;  // `set:`, "key=value" for every run
  std::vector<GridAxis> axes;
  std::vector<int64_t> seeds;  // `seeds:`, default the base config's run.seed
  std::string runs_dir;        // `runs_dir:` or --runs-dir, default runs/<name>
  // `quant:`, the `attnlab eval --quant` modes (w8a8, w8a16) each finished run is evaluated in.
  std::vector<std::string> quant;
};

struct GridRun {
  size_t index = 0;        // position in the expansion (seeds outermost, then the axes in order)
  std::string name;        // "variant=sigmoid,position=rope,s1"
  std::string point;       // the name without the seed ("" for a grid without axes)
  std::vector<size_t> at;  // per axis, the index of this run's value
  std::vector<std::pair<std::string, std::string>> sets;  // the axes' key = value, in axis order
  int64_t seed = 0;
  std::string dir;  // runs_dir/name
};

// Reads and checks a grid file; runs_dir_override (--runs-dir) replaces `runs_dir:` when not empty.
Grid load_grid(const std::string& path, const std::string& runs_dir_override = "");

std::vector<GridRun> expand_grid(const Grid& grid);

// The short name of each key: its last path component, or as many components from the end as
// make it differ from every other key's ("attention.dropout" next to "model.dropout").
std::map<std::string, std::string> short_key_names(const std::vector<std::string>& keys);

// A value as part of a directory name: letters, digits and . _ + - kept, anything else '_'.
std::string sanitise_value(const std::string& value);

// Every axis key of the grid, in axis order.
std::vector<std::string> axis_keys(const Grid& grid);

}  // namespace attn::studies
