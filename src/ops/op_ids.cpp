#include "ops/op_ids.h"

namespace attn {

namespace {
const char* const kNames[] = {
#define ATTNLAB_OP_NAME(name) #name,
    ATTNLAB_OPS(ATTNLAB_OP_NAME)
#undef ATTNLAB_OP_NAME
};
}  // namespace

const char* op_name(OpId op) { return kNames[static_cast<int>(op)]; }
int op_count() { return static_cast<int>(sizeof(kNames) / sizeof(kNames[0])); }
OpId op_by_index(int i) { return static_cast<OpId>(i); }

}  // namespace attn
