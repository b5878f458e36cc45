// The smallest ViT the model-level tests build: 8×8 single-channel images in 4×4 patches (a 2×2
// grid, 4 patches + the class token), d 16, 2 heads, 2 layers, 3 classes.
#pragma once
#include "models/vit/vit.h"

namespace attn::testing {

inline models::VitConfig tiny_vit_config() {
  models::VitConfig c;
  c.image_height = c.image_width = 8;
  c.channels = 1;
  c.patch_size = 4;
  c.n_layers = 2;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_classes = 3;
  return c;
}

}  // namespace attn::testing
