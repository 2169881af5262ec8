/* placeholder: replaced by the real kernels */
#include "cpu.h"
vr_status vr_cpu_maxpool_forward(vr_backend *be, const vr_window *d, const float *x, float *y, int32_t *argmax) { (void)be;(void)d;(void)x;(void)y;(void)argmax; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy, const int32_t *argmax, float *dx) { (void)be;(void)d;(void)dy;(void)argmax;(void)dx; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x, float *y) { (void)be;(void)n;(void)c;(void)s;(void)x;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy, float *dx) { (void)be;(void)n;(void)c;(void)s;(void)dy;(void)dx; return VR_ERR_UNSUPPORTED; }
