/* placeholder: replaced by the real kernels */
#include "cpu.h"
vr_status vr_cpu_conv_forward(vr_backend *be, const vr_window *d, const float *x, const float *w, const float *b, float *y) { (void)be;(void)d;(void)x;(void)w;(void)b;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy, const float *w, float *dx) { (void)be;(void)d;(void)dy;(void)w;(void)dx; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x, const float *dy, float *dw, float *db) { (void)be;(void)d;(void)x;(void)dy;(void)dw;(void)db; return VR_ERR_UNSUPPORTED; }
