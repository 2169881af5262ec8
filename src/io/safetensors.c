/* placeholder: replaced by the real reader and writer */
#include "vicreg/safetensors.h"
