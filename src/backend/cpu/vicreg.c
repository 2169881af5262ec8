/* placeholder: replaced by the real kernels */
#include "cpu.h"
vr_status vr_cpu_vicreg_loss(vr_backend *be, int n, int d, const float *z1, const float *z2, vr_vicreg_coeffs coeffs, vr_vicreg_terms *terms, float *dz1, float *dz2) { (void)be;(void)n;(void)d;(void)z1;(void)z2;(void)coeffs;(void)terms;(void)dz1;(void)dz2; return VR_ERR_UNSUPPORTED; }
