/* placeholder: replaced by the real kernels */
#include "cpu.h"
vr_status vr_cpu_linear_forward(vr_backend *be, int n, int in, int out, const float *x, const float *w, const float *b, float *y) { (void)be;(void)n;(void)in;(void)out;(void)x;(void)w;(void)b;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_linear_backward(vr_backend *be, int n, int in, int out, const float *dy, const float *x, const float *w, float *dx, float *dw, float *db) { (void)be;(void)n;(void)in;(void)out;(void)dy;(void)x;(void)w;(void)dx;(void)dw;(void)db; return VR_ERR_UNSUPPORTED; }
