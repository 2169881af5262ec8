/* Internal interface of the CPU backend: its context and every kernel it puts in the table.
 * Kernels are plain C over host memory, threaded with OpenMP over `vr_cpu_threads(be)` threads
 * with static schedules and reductions combined in a fixed order, so the same thread count
 * gives the same bits. Matrix products go through OpenBLAS (cblas_sgemm); called inside an
 * OpenMP region, the OpenMP build of OpenBLAS runs single-threaded in the calling thread. */
#ifndef VR_CPU_H
#define VR_CPU_H

#include "vicreg/backend.h"

/* oneDNN's engine, stream and primitive cache (conv_dnnl.c); present in builds with oneDNN. */
typedef struct vr_dnnl vr_dnnl;
typedef struct vr_dnnl_conv vr_dnnl_conv;

typedef struct vr_cpu_ctx {
    int threads;
    vr_dnnl *dnnl;         /* NULL: convolutions by im2col + sgemm */
    float *scratch;        /* grows on demand, reused every step */
    size_t scratch_bytes;
} vr_cpu_ctx;

int vr_cpu_threads(vr_backend *be);
/* At least `bytes` of scratch; valid until the next call. Allocates only when growing. */
vr_status vr_cpu_scratch(vr_backend *be, size_t bytes, float **out);

/* conv_dnnl.c */
vr_status vr_dnnl_create(vr_dnnl **out);
void vr_dnnl_destroy(vr_dnnl *dn);
static inline vr_dnnl *vr_cpu_dnnl(vr_backend *be) { return ((vr_cpu_ctx *)be->ctx)->dnnl; }
vr_status vr_dnnl_conv_forward(vr_backend *be, const vr_window *d, const float *x, const float *w,
                               const float *b, float *y);
vr_status vr_dnnl_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                     const float *w, float *dx);
vr_status vr_dnnl_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                       const float *dy, float *dw, float *db);
/* conv.c */
vr_status vr_cpu_conv_forward(vr_backend *be, const vr_window *d, const float *x, const float *w,
                              const float *b, float *y);
vr_status vr_cpu_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                    const float *w, float *dx);
vr_status vr_cpu_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                      const float *dy, float *dw, float *db);
/* pool.c */
vr_status vr_cpu_maxpool_forward(vr_backend *be, const vr_window *d, const float *x, float *y,
                                 int32_t *argmax);
vr_status vr_cpu_maxpool_backward(vr_backend *be, const vr_window *d, const float *dy,
                                  const int32_t *argmax, float *dx);
vr_status vr_cpu_avgpool_forward(vr_backend *be, int n, int c, int s, const float *x, float *y);
vr_status vr_cpu_avgpool_backward(vr_backend *be, int n, int c, int s, const float *dy, float *dx);
/* batchnorm.c */
vr_status vr_cpu_bn_forward_train(vr_backend *be, const vr_bn_sync *sync, int n, int c,
                                  int s, const float *x,
                                  const float *gamma, const float *beta, const float *residual,
                                  int relu, float *y, float *mean, float *invstd,
                                  float *running_mean, float *running_var, float momentum,
                                  float eps);
vr_status vr_cpu_bn_forward_eval(vr_backend *be, int n, int c, int s, const float *x,
                                 const float *gamma, const float *beta, const float *residual,
                                 int relu, float *y, const float *running_mean,
                                 const float *running_var, float eps);
vr_status vr_cpu_bn_backward(vr_backend *be, const vr_bn_sync *sync, int n, int c, int s,
                             const float *dy,
                             const float *y_relu, const float *x, const float *gamma,
                             const float *mean, const float *invstd, float *dx, float *dgamma,
                             float *dbeta, float *dres);
/* elementwise.c */
vr_status vr_cpu_relu_forward(vr_backend *be, size_t count, const float *x, float *y);
vr_status vr_cpu_relu_backward(vr_backend *be, size_t count, const float *dy, const float *y,
                               float *dx);
vr_status vr_cpu_add(vr_backend *be, size_t count, const float *a, const float *b, float *y);
vr_status vr_cpu_accumulate(vr_backend *be, size_t count, const float *a, float *y);
vr_status vr_cpu_fill(vr_backend *be, size_t count, float value, float *y);
vr_status vr_cpu_sum_squares(vr_backend *be, size_t count, const float *x, double *out);
/* linear.c */
vr_status vr_cpu_linear_forward(vr_backend *be, int n, int in, int out, const float *x,
                                const float *w, const float *b, float *y);
vr_status vr_cpu_linear_backward(vr_backend *be, int n, int in, int out, const float *dy,
                                 const float *x, const float *w, float *dx, float *dw, float *db);
/* vicreg.c */
vr_status vr_cpu_vicreg_loss(vr_backend *be, int n, int d, const float *z1, const float *z2,
                             vr_vicreg_coeffs coeffs, vr_vicreg_terms *terms, float *dz1,
                             float *dz2);
/* optim.c */
vr_status vr_cpu_lars_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                           float lr, float weight_decay, float momentum, float eta, int trust);
vr_status vr_cpu_sgd_step(vr_backend *be, size_t count, float *w, const float *g, float *mu,
                          float lr, float weight_decay, float momentum, int first_step);
vr_status vr_cpu_adamw_step(vr_backend *be, size_t count, float *w, const float *g, float *m,
                            float *v, float lr, float beta1, float beta2, float eps,
                            float weight_decay, long step);

#endif
