/* Internal: the conv + BatchNorm unit shared by the ResNet stem, blocks and shortcuts. */
#ifndef VR_CONVBN_H
#define VR_CONVBN_H

#include "vicreg/nn.h"

/* Reserves `floats` (rounded to 64 bytes) of workspace at *cursor; returns the offset. */
size_t vr_ws_take(size_t *cursor, size_t floats);

/* Declares prefix.CONV.weight and prefix.BN.{weight,bias,running_mean,running_var}. */
vr_status vr_convbn_declare(vr_convbn *l, const char *prefix, const char *conv, const char *bn,
                            int rank, int cin, int cout, int k, int stride, int pad,
                            vr_paramset *params, vr_paramset *buffers, vr_counters *counts);
/* Sizes the unit for n inputs of (h, w) and takes its workspace (activations as be stores
 * them). */
vr_status vr_convbn_plan(vr_convbn *l, const vr_backend *be, int rank, int n, int h, int w,
                         size_t *cursor);
/* y = relu?(bn(conv(x)) + residual?) into ws + l->out; x, residual and y activations */
vr_status vr_convbn_forward(const vr_convbn *l, const vr_ctx *c, int rank, const float *x,
                            const float *residual, int relu);
/* dy (N,Cout,OH,OW) -> gradients +=; tmp receives d(conv output); dres the masked dy when not
 * NULL; dx (N,Cin,H,W) when not NULL (may alias dy or x: both are consumed before dx is
 * written). x, dy, tmp, dres, dx are activations. */
vr_status vr_convbn_backward(const vr_convbn *l, const vr_ctx *c, int rank, const float *x,
                             const float *dy, int relu, float *tmp, float *dres, float *dx);
/* Output elements per sample */
size_t vr_convbn_out_size(const vr_convbn *l);

#endif
