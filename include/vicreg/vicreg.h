/* The vicreg library: self-supervised joint-embedding learning (VICReg) in C. */
#ifndef VICREG_H
#define VICREG_H

#include "vicreg/status.h"
#include "vicreg/tensor.h"
#include "vicreg/rng.h"
#include "vicreg/backend.h"
#include "vicreg/safetensors.h"
#include "vicreg/params.h"
#include "vicreg/nn.h"
#include "vicreg/model.h"
#include "vicreg/optim.h"
#include "vicreg/trainer.h"
#include "vicreg/checkpoint.h"

#endif
