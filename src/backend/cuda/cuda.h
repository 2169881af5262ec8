/* Internal interface of the CUDA backend: its context, the status translation of CUDA, cuBLAS
 * and cuDNN calls, the device scratch, and every kernel it puts in the backend table.
 *
 * Everything hangs off the vr_backend's context: one compute stream on which every kernel,
 * cuBLAS and cuDNN call is queued in order (so a kernel may reuse the scratch the previous one
 * used), the library handles bound to that stream, one scratch block grown on demand, the
 * convolution plans found so far, and a small pinned buffer through which results reach the
 * host. Kernels are queued and not waited for; only download, sync and the calls that return
 * a number to the host (the VICReg terms, the sum of squares) wait for the stream.
 *
 * Included by the C files and by the CUDA (C++) files, so it is written in the common subset. */
#ifndef VR_CUDA_H
#define VR_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
/* the C library headers the vicreg headers include, first, so that inside the extern "C"
 * block below their include guards make them no-ops under C++ */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "vicreg/backend.h"

/* What the tensor cores may do: FP32 computes in float32 throughout (the reference precision);
 * TF32 lets convolutions and linear layers round their inputs to TF32 (PyTorch's default for
 * cuDNN convolutions); BF16 keeps the ResNet's activations in bfloat16 NHWC (backend.h), runs
 * convolutions in bfloat16 on tensor cores and linear layers with bfloat16 inputs, float32
 * accumulation everywhere. In every mode parameters, gradients, optimiser state, batch norm
 * statistics, the expander's activations and the VICReg loss stay float32. */
typedef enum vr_cuda_math { VR_CUDA_FP32, VR_CUDA_TF32, VR_CUDA_BF16 } vr_cuda_math;

typedef struct vr_cuda_conv vr_cuda_conv; /* a cached convolution plan, conv.c */

typedef struct vr_cuda_ctx {
    int device;
    vr_cuda_math math;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    void *scratch;             /* device, grows on demand, reused by every kernel */
    size_t scratch_bytes;
    double *pinned;            /* host, VR_CUDA_PINNED doubles: results read back */
    cudaStream_t copy_stream;  /* input copies (copy.c), beside the compute stream */
    cudaEvent_t queued;        /* the compute stream's work up to a copy's start */
    cudaEvent_t copied[2];     /* the end of copy slot 0 and 1 */
    double *sync_host;         /* host, SyncBN statistics on their way between the ranks */
    size_t sync_host_count;
    vr_cuda_conv **convs;      /* plans by window, found on first use */
    int nconvs, cap_convs;
} vr_cuda_ctx;

/* Doubles in the pinned result buffer. */
#define VR_CUDA_PINNED 16

/* copy.c: the copy stream and its events (created with the context, destroyed with it) and
 * the backend's pin, unpin, copy_start, copy_join, copy_wait */
vr_status vr_cuda_copy_open(vr_cuda_ctx *c);
void vr_cuda_copy_close(vr_cuda_ctx *c);
vr_status vr_cuda_pin(vr_backend *be, void *host, size_t bytes);
void vr_cuda_unpin(vr_backend *be, void *host);
vr_status vr_cuda_copy_start(vr_backend *be, int slot, float *dst, const float *host_src,
                             size_t count);
vr_status vr_cuda_copy_join(vr_backend *be, int slot);
vr_status vr_cuda_copy_wait(vr_backend *be, int slot);

/* backend.c: the registry's entry for "cuda", "cuda-tf32" and "cuda-bf16" */
vr_status vr_cuda_backend_create(const char *name, vr_backend **out);

static inline vr_cuda_ctx *vr_cuda(vr_backend *be) { return (vr_cuda_ctx *)be->ctx; }

/* VR_OK, or VR_ERR_DEVICE with "cuda: <call>: <CUDA's message>". */
vr_status vr_cuda_check(cudaError_t e, const char *call);
vr_status vr_cublas_check(cublasStatus_t s, const char *call);
vr_status vr_cudnn_check(cudnnStatus_t s, const char *call);
#define VR_CUDA_TRY(call) VR_TRY(vr_cuda_check((call), #call))
#define VR_CUBLAS_TRY(call) VR_TRY(vr_cublas_check((call), #call))
#define VR_CUDNN_TRY(call) VR_TRY(vr_cudnn_check((call), #call))

/* At least `bytes` of device scratch (256-byte aligned); valid until the next call. Growing
 * waits for the stream, since queued kernels may still use the old block. */
vr_status vr_cuda_scratch(vr_backend *be, size_t bytes, void **out);

/* Waits for the stream and returns the first error of its queued work. */
vr_status vr_cuda_wait(vr_backend *be, const char *what);

/* `count` doubles from device memory into the pinned buffer (count <= VR_CUDA_PINNED), after
 * the queued work; returns the host copy. */
vr_status vr_cuda_read_doubles(vr_backend *be, const double *dev, int count, const double **out);

/* A single-precision product in cuBLAS's column-major terms, C = alpha op(A) op(B) + beta C,
 * in the backend's math mode, or in plain float32 when `exact` (the VICReg loss). */
vr_status vr_cuda_gemm(vr_backend *be, int exact, cublasOperation_t ta, cublasOperation_t tb,
                       int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                       int ldb, float beta, float *c, int ldc);

/* Blocks of `threads` for a grid-stride loop over n items, at least 1 and at most 65535 * 16. */
static inline unsigned vr_cuda_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return (unsigned)b;
}

/* Sums partials (count doubles, device) in a fixed order into *out (device): one block, so the
 * result is the same bits for the same input. elementwise.cu */
cudaError_t vr_cuda_sum_partials(cudaStream_t s, const double *partials, int count, double *out);

/* conv.c */
vr_status vr_cuda_conv_forward(vr_backend *be, const vr_window *d, const float *x,
                               const float *w, const float *b, float *y);
vr_status vr_cuda_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                     const float *w, float *dx);
vr_status vr_cuda_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                       const float *dy, float *dw, float *db);
void vr_cuda_conv_plans_free(vr_cuda_ctx *c);
/* layout.cu: float32 (N,C,S) <-> bfloat16 (N,S,C), the layout cuDNN's tensor cores want. The
 * back conversion overwrites the float32 tensor, or adds to it when `accumulate`. */
cudaError_t vr_cuda_to_nhwc_bf16(cudaStream_t s, int n, int c, int sp, const float *src,
                                 void *dst);
cudaError_t vr_cuda_from_nhwc_bf16(cudaStream_t s, int n, int c, int sp, const void *src,
                                   int accumulate, float *dst);
/* act_import and act_export of cuda-bf16 (layout.cu) */
vr_status vr_cuda_act_import(vr_backend *be, int n, int c, int s, const float *src, float *dst);
vr_status vr_cuda_act_export(vr_backend *be, int n, int c, int s, const float *src, float *dst);
/* pool.cu; the nhwc_ ones over bfloat16 channels-last activations */
vr_status vr_cuda_nhwc_maxpool_forward(vr_backend *be, const vr_window *d, const float *x,
                                       float *y, int32_t *argmax);
vr_status vr_cuda_nhwc_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy,
                                        const int32_t *argmax, float *dx);
vr_status vr_cuda_nhwc_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x,
                                       float *y);
vr_status vr_cuda_nhwc_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy,
                                        float *dx);
vr_status vr_cuda_maxpool_forward(vr_backend *be, const vr_window *d, const float *x, float *y,
                                  int32_t *argmax);
vr_status vr_cuda_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy,
                                   const int32_t *argmax, float *dx);
vr_status vr_cuda_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x, float *y);
vr_status vr_cuda_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy,
                                   float *dx);
/* batchnorm.cu; the nhwc_ ones over bfloat16 channels-last activations (act_bn_*) */
vr_status vr_cuda_nhwc_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n, int c,
                                        int s, const float *x, const float *gamma,
                                        const float *beta, const float *residual, int relu,
                                        float *y, float *mean, float *invstd,
                                        float *running_mean, float *running_var, float momentum,
                                        float eps);
vr_status vr_cuda_nhwc_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                       const float *gamma, const float *beta,
                                       const float *residual, int relu, float *y,
                                       const float *running_mean, const float *running_var,
                                       float eps);
vr_status vr_cuda_nhwc_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                   const float *dy, const float *y_relu, const float *x,
                                   const float *gamma, const float *mean, const float *invstd,
                                   float *dx, float *dgamma, float *dbeta, float *dres);
vr_status vr_cuda_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n, int c,
                                   int s, const float *x,
                                   const float *gamma, const float *beta, const float *residual,
                                   int relu, float *y, float *mean, float *invstd,
                                   float *running_mean, float *running_var, float momentum,
                                   float eps);
vr_status vr_cuda_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                  const float *gamma, const float *beta, const float *residual,
                                  int relu, float *y, const float *running_mean,
                                  const float *running_var, float eps);
vr_status vr_cuda_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                              const float *dy,
                              const float *y_relu, const float *x, const float *gamma,
                              const float *mean, const float *invstd, float *dx, float *dgamma,
                              float *dbeta, float *dres);
/* elementwise.cu */
vr_status vr_cuda_relu_forward(vr_backend *be, size_t count, const float *x, float *y);
vr_status vr_cuda_relu_backward(vr_backend *be, size_t count, const float *dy, const float *y,
                                float *dx);
vr_status vr_cuda_add(vr_backend *be, size_t count, const float *a, const float *b, float *y);
vr_status vr_cuda_accumulate(vr_backend *be, size_t count, const float *a, float *y);
vr_status vr_cuda_fill(vr_backend *be, size_t count, float value, float *y);
vr_status vr_cuda_nhwc_accumulate(vr_backend *be, size_t count, const float *a, float *y);
vr_status vr_cuda_sum_squares(vr_backend *be, size_t count, const float *x, double *out);
/* linear.cu */
vr_status vr_cuda_linear_forward(vr_backend *be, int n, int in, int out, const float *x,
                                 const float *w, const float *b, float *y);
vr_status vr_cuda_linear_backward(vr_backend *be, int n, int in, int out, const float *dy,
                                  const float *x, const float *w, float *dx, float *dw,
                                  float *db);
/* vicreg.cu */
vr_status vr_cuda_vicreg_loss(vr_backend *be, int n, int d, const float *z1, const float *z2,
                              vr_vicreg_coeffs coeffs, vr_vicreg_terms *terms, float *dz1,
                              float *dz2);
/* optim.cu */
vr_status vr_cuda_lars_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                            float lr, float weight_decay, float momentum, float eta, int trust);
vr_status vr_cuda_sgd_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                           float lr, float weight_decay, float momentum, int first_step);
vr_status vr_cuda_adamw_step(vr_backend *be, size_t count, float *w, const float *g, float *m,
                             float *v, float lr, float beta1, float beta2, float eps,
                             float weight_decay, long step);

#ifdef __cplusplus
}
#endif

#endif
