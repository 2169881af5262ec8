/* The backend table: every numeric kernel the trainer needs, behind function pointers.
 *
 * A backend is a table plus a context (as ggml's). The CPU backend is the reference: every
 * other backend is tested against it op by op. All pointers are device pointers of the backend.
 * Layouts are PyTorch's: float32 tensors (N,C,H,W), with 1-D data as H = 1 (N,C,1,L); conv
 * weights (Cout,Cin,KH,KW); linear weights (out,in).
 *
 * Activations, the (N,C,H,W) tensors the convolutional network passes from op to op (the
 * inputs and outputs, and their gradients, of the convolutions, of the act_bn_* batch norms, of
 * max pooling, of act_accumulate, and the (N,C,S) side of average pooling), are stored as the
 * backend's `act` says: VR_ACT_F32, float32 (N,C,H,W) as above; or VR_ACT_BF16_NHWC, bfloat16
 * (N,H,W,C), channels last, the layout of tensor-core convolutions (cuda-bf16), in the first
 * vr_act_floats(be, count) floats of a buffer. act_import and act_export convert float32
 * (N,C,H,W) to and from it. Everything else (linear layers, the expander's batch norm, the
 * loss, parameters and their gradients, batch norm statistics) is float32 in every backend.
 *
 * Gradient convention (as llm.c): gradients of parameters ACCUMULATE (+=) into their buffers,
 * which the trainer zeroes once per step; gradients of activations (dx) are OVERWRITTEN.
 *
 * Kernels take the scratch they need from the backend's own workspace, which grows on first
 * use of a larger shape and is then reused: after a model's first step no allocation happens
 * on the step path. */
#ifndef VICREG_BACKEND_H
#define VICREG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vicreg/status.h"
#include "vicreg/tensor.h"

/* A convolution or pooling window over (N,C,H,W); rank-1 data uses h = 1, kh = 1, sh = 1, ph = 0. */
typedef struct vr_window {
    int n, c_in, c_out;      /* c_out = c_in for pooling */
    int h_in, w_in;
    int kh, kw, sh, sw, ph, pw;
    int h_out, w_out;        /* filled by vr_window_init */
} vr_window;

/* Fills w and its output size; rank is 1 or 2; k, stride, pad have `rank` entries
 * (for rank 1 they describe the length axis). VR_ERR_SHAPE names the problem. */
vr_status vr_window_init(vr_window *w, int rank, int n, int c_in, int c_out, int h_in, int w_in,
                         const int *k, const int *stride, const int *pad);

/* VICReg loss coefficients and the terms it reports (shared/SPEC.md). */
typedef struct vr_vicreg_coeffs {
    float sim;   /* invariance, 25 */
    float std;   /* variance, 25 */
    float cov;   /* covariance, 1 */
} vr_vicreg_coeffs;

typedef struct vr_vicreg_terms {
    double loss, invariance, variance, covariance;
} vr_vicreg_terms;

/* Batch norm synchronised over the ranks of a data-parallel run (SyncBN), host memory.
 * The training forward hands `gather` this rank's (C,2) per-channel mean and sum of squared
 * deviations and receives every rank's, (ranks,C,2) in rank order, which it merges in that
 * order, so all ranks normalise with the same statistics of the global batch. The backward
 * hands `reduce` its (C,2) sums of g and g*(x - mean), summed over the ranks in place; dx then
 * follows from the global sums, while dgamma and dbeta take this rank's own (the gradient
 * all-reduce adds the ranks'). Every rank holds the same number of samples. */
typedef struct vr_bn_sync {
    void *ctx;
    int ranks;
    vr_status (*gather)(void *ctx, const double *mine, size_t count, double *all);
    vr_status (*reduce)(void *ctx, double *sums, size_t count);
} vr_bn_sync;

/* How a backend stores activations (above). */
typedef enum vr_act { VR_ACT_F32 = 0, VR_ACT_BF16_NHWC = 1 } vr_act;

typedef struct vr_backend vr_backend;

struct vr_backend {
    const char *name;
    vr_device device;
    vr_act act;
    void *ctx;

    /* -- lifetime and memory ----------------------------------------------------------- */
    void (*destroy)(vr_backend *be);
    vr_status (*alloc)(vr_backend *be, size_t bytes, float **out);
    void (*free)(vr_backend *be, float *p);
    vr_status (*upload)(vr_backend *be, float *dst, const float *host_src, size_t count);
    vr_status (*download)(vr_backend *be, float *host_dst, const float *src, size_t count);
    /* Blocks until queued work is done (no-op on the CPU). */
    vr_status (*sync)(vr_backend *be);

    /* -- input copies that overlap compute: NULL on the CPU, whose "device" is the host -------
     * pin page-locks host memory so that copies from it run without the host (unpin before it
     * is freed; pinning memory that cannot be pinned fails and leaves copies slower, not
     * wrong). copy_start queues a copy of count floats from host to dst on a stream of its own,
     * started once the work queued so far is done, as copy `slot` (0 or 1); copy_join makes the
     * work queued from then on wait for copy `slot`; copy_wait makes the host wait for it, after
     * which its host memory may change. A training loop alternates two device buffers: the
     * next batch is copied while the current one is computed. */
    vr_status (*pin)(vr_backend *be, void *host, size_t bytes);
    void (*unpin)(vr_backend *be, void *host);
    vr_status (*copy_start)(vr_backend *be, int slot, float *dst, const float *host_src,
                            size_t count);
    vr_status (*copy_join)(vr_backend *be, int slot);
    vr_status (*copy_wait)(vr_backend *be, int slot);

    /* -- activations stored other than as float32 (N,C,S) (NULL where act is VR_ACT_F32):
     * act_import: dst (an activation of N,C,S) = src (float32 N,C,S); act_export: back */
    vr_status (*act_import)(vr_backend *be, int n, int c, int s, const float *src, float *dst);
    vr_status (*act_export)(vr_backend *be, int n, int c, int s, const float *src, float *dst);

    /* -- convolution: x (N,Cin,H,W) w (Cout,Cin,KH,KW) b (Cout) or NULL, y (N,Cout,OH,OW);
     * x, y, dx, dy are activations ------------------------------------------------------- */
    vr_status (*conv_forward)(vr_backend *be, const vr_window *d, const float *x, const float *w,
                              const float *b, float *y);
    /* dx (N,Cin,H,W) = overwritten */
    vr_status (*conv_backward_data)(vr_backend *be, const vr_window *d, const float *dy,
                                    const float *w, float *dx);
    /* dw (Cout,Cin,KH,KW) += ; db (Cout) += when not NULL */
    vr_status (*conv_backward_weight)(vr_backend *be, const vr_window *d, const float *x,
                                      const float *dy, float *dw, float *db);

    /* -- batch norm over (N,C,S), S = spatial size (1 for BatchNorm1d on (N,C)) ------------
     * training: y = gamma * (x - mean) * invstd + beta with biased batch variance; running
     * statistics updated as PyTorch (momentum, unbiased variance); mean, invstd (C) are saved
     * for the backward. Fusions used by ResNet blocks: when `residual` is not NULL it is added
     * after the affine step; when relu is non-zero, y = max(y, 0). With sync (not NULL) the
     * statistics are those of every rank's batch (vr_bn_sync). */
    vr_status (*bn_forward_train)(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                  const float *x,
                                  const float *gamma, const float *beta, const float *residual,
                                  int relu, float *y, float *mean, float *invstd,
                                  float *running_mean, float *running_var, float momentum,
                                  float eps);
    /* evaluation: running statistics, same fusions */
    vr_status (*bn_forward_eval)(vr_backend *be, int n, int c, int s, const float *x,
                                 const float *gamma, const float *beta, const float *residual,
                                 int relu, float *y, const float *running_mean,
                                 const float *running_var, float eps);
    /* dx overwritten; dgamma, dbeta (C) +=. When y_relu is not NULL the forward had relu and dy
     * is first masked by y_relu > 0. When dres is not NULL it receives the (masked) gradient
     * of the residual input (overwritten). sync as the training forward's. */
    vr_status (*bn_backward)(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                             const float *dy,
                             const float *y_relu, const float *x, const float *gamma,
                             const float *mean, const float *invstd, float *dx, float *dgamma,
                             float *dbeta, float *dres);
    /* the same three over activations (the ResNet's): x, residual, y, dy, y_relu, dx and dres
     * stored as the backend stores activations; the per-channel vectors float32 */
    vr_status (*act_bn_forward_train)(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                      const float *x, const float *gamma, const float *beta,
                                      const float *residual, int relu, float *y, float *mean,
                                      float *invstd, float *running_mean, float *running_var,
                                      float momentum, float eps);
    vr_status (*act_bn_forward_eval)(vr_backend *be, int n, int c, int s, const float *x,
                                     const float *gamma, const float *beta, const float *residual,
                                     int relu, float *y, const float *running_mean,
                                     const float *running_var, float eps);
    vr_status (*act_bn_backward)(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                                 const float *dy, const float *y_relu, const float *x,
                                 const float *gamma, const float *mean, const float *invstd,
                                 float *dx, float *dgamma, float *dbeta, float *dres);
    /* y += a over an activation of count elements */
    vr_status (*act_accumulate)(vr_backend *be, size_t count, const float *a, float *y);

    /* -- elementwise over count floats ----------------------------------------------------- */
    vr_status (*relu_forward)(vr_backend *be, size_t count, const float *x, float *y);
    /* dx = dy * (y > 0), overwritten; dx may alias dy */
    vr_status (*relu_backward)(vr_backend *be, size_t count, const float *dy, const float *y,
                               float *dx);
    /* y = a + b; y may alias a or b */
    vr_status (*add)(vr_backend *be, size_t count, const float *a, const float *b, float *y);
    /* y += a */
    vr_status (*accumulate)(vr_backend *be, size_t count, const float *a, float *y);
    vr_status (*fill)(vr_backend *be, size_t count, float value, float *y);

    /* -- pooling ----------------------------------------------------------------------------
     * max pool (padding counts as -inf, as PyTorch); x, y, dy, dx activations; argmax an
     * int32 index into the input plane per output element, laid out as the activations are,
     * saved for the backward */
    vr_status (*maxpool_forward)(vr_backend *be, const vr_window *d, const float *x, float *y,
                                 int32_t *argmax);
    /* dx overwritten */
    vr_status (*maxpool_backward)(vr_backend *be, const vr_window *d, const float *dy,
                                  const int32_t *argmax, float *dx);
    /* global average pool: x (N,C,S) activation -> y (N,C) float32 */
    vr_status (*avgpool_forward)(vr_backend *be, int n, int c, int s, const float *x, float *y);
    /* dx (N,C,S) activation, overwritten, from dy (N,C) float32 */
    vr_status (*avgpool_backward)(vr_backend *be, int n, int c, int s, const float *dy, float *dx);

    /* -- linear: x (N,in) w (out,in) b (out) or NULL, y (N,out) = x w^T + b ---------------- */
    vr_status (*linear_forward)(vr_backend *be, int n, int in, int out, const float *x,
                                const float *w, const float *b, float *y);
    /* dx (N,in) overwritten when not NULL; dw += dy^T x; db += sum dy when not NULL */
    vr_status (*linear_backward)(vr_backend *be, int n, int in, int out, const float *dy,
                                 const float *x, const float *w, float *dx, float *dw, float *db);

    /* -- VICReg loss on embeddings z1, z2 (N,D), shared/SPEC.md; the covariance divides by the
     * real N - 1. Terms are written to *terms (host). When dz1/dz2 are not NULL they receive
     * d loss / d z (overwritten). N >= 2. */
    vr_status (*vicreg_loss)(vr_backend *be, int n, int d, const float *z1, const float *z2,
                             vr_vicreg_coeffs coeffs, vr_vicreg_terms *terms, float *dz1,
                             float *dz2);

    /* -- optimiser updates over one parameter tensor of `count` floats ----------------------
     * LARS (shared/SPEC.md): g' = g + wd * w; q = trust ? eta*|w|/|g'| (1 if either is 0) : 1;
     * mu = momentum * mu + q * g'; w -= lr * mu. Non-trust tensors pass wd = 0, trust = 0. */
    vr_status (*lars_step)(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                           float lr, float weight_decay, float momentum, float eta, int trust);
    /* SGD as torch.optim.SGD: g' = g + wd*w; mu = momentum*mu + g' (mu = g' on the first step,
     * first_step != 0); w -= lr * mu */
    vr_status (*sgd_step)(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                          float lr, float weight_decay, float momentum, int first_step);
    /* AdamW as torch.optim.AdamW: w -= lr*wd*w; m, v moments; bias correction by step t >= 1 */
    vr_status (*adamw_step)(vr_backend *be, size_t count, float *w, const float *g, float *m,
                            float *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, long step);
    /* sum of squares of count floats, in double, written to *out (host) */
    vr_status (*sum_squares)(vr_backend *be, size_t count, const float *x, double *out);
};

/* Floats of a buffer that hold an activation of count elements as be stores activations. */
size_t vr_act_floats(const vr_backend *be, size_t count);

/* The element `elements` elements after base in an activation of be (as strchr, the result
 * drops the const of its argument). */
static inline float *vr_act_at(const vr_backend *be, const float *base, size_t elements)
{
    if (be->act == VR_ACT_BF16_NHWC) return (float *)(void *)((const uint16_t *)(const void *)base + elements);
    return (float *)base + elements;
}

/* Creates a backend by name: "cpu" (always); "cuda" (float32), "cuda-tf32" and "cuda-bf16"
 * (tensor-core math) where built with CUDA, VR_ERR_DEVICE "no CUDA device: ..." where none can
 * be used. threads <= 0: all cores (the CPU backends). */
vr_status vr_backend_create(const char *name, int threads, vr_backend **out);
void vr_backend_destroy(vr_backend *be);
/* The CPU backend, directly. */
vr_status vr_cpu_backend_create(int threads, vr_backend **out);
/* The CPU backend with a chosen convolution: im2col + OpenBLAS sgemm (every build), or
 * oneDNN (builds with libdnnl-dev; the default there, being the faster one). */
typedef enum vr_cpu_conv { VR_CPU_CONV_IM2COL, VR_CPU_CONV_ONEDNN } vr_cpu_conv;
vr_status vr_cpu_backend_create_conv(int threads, vr_cpu_conv conv, vr_backend **out);

#endif
