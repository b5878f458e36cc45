// Emulated build: the CUDA runtime API and device functions come from the CPU emulator.
#pragma once
#include "backend/cuda_emu/emu.h"
