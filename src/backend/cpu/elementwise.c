/* placeholder: replaced by the real kernels */
#include "cpu.h"
vr_status vr_cpu_relu_forward(vr_backend *be, size_t count, const float *x, float *y) { (void)be;(void)count;(void)x;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_relu_backward(vr_backend *be, size_t count, const float *dy, const float *y, float *dx) { (void)be;(void)count;(void)dy;(void)y;(void)dx; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_add(vr_backend *be, size_t count, const float *a, const float *b, float *y) { (void)be;(void)count;(void)a;(void)b;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_accumulate(vr_backend *be, size_t count, const float *a, float *y) { (void)be;(void)count;(void)a;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_fill(vr_backend *be, size_t count, float value, float *y) { (void)be;(void)count;(void)value;(void)y; return VR_ERR_UNSUPPORTED; }
vr_status vr_cpu_sum_squares(vr_backend *be, size_t count, const float *x, double *out) { (void)be;(void)count;(void)x;(void)out; return VR_ERR_UNSUPPORTED; }
