# Shared by the experiment scripts (sourced; BIN is the attnlab binary).

# train_or_resume DIR WHAT TRAIN_ARGS...: a finished run (DIR/summary.json) is kept, an
# interrupted one (DIR/config.yaml, no summary) continues exactly from its last good checkpoint,
# any other DIR is trained with TRAIN_ARGS (which must set run.dir=DIR).
train_or_resume() {
  local dir=$1 what=$2
  shift 2
  if [ -f "$dir/summary.json" ]; then
    echo "== $what: finished earlier, kept ($dir)"
  elif [ -f "$dir/config.yaml" ]; then
    echo "== $what: resuming $dir"
    "$BIN" train --set run.dir="$dir" --resume
  else
    echo "== $what: training -> $dir"
    "$BIN" train "$@"
  fi
}
