/* Layers and models: the ResNet family (18/34/50, spatial rank 1 or 2, torchvision topology and
 * parameter names), the expander MLP, and a branch = encoder + expander.
 *
 * Building is three phases: declare (names and shapes into a vr_paramset, as PyTorch's
 * state_dict would name them), plan (activation offsets for a batch and input size, in floats,
 * into one workspace reused every step), run (forward / backward through a backend).
 * Representation = encoder output; embedding = expander output.
 *
 * Two views share one pass: a batch of 2N samples (view 1 then view 2) runs through every
 * convolution at once, while BatchNorm takes statistics per group of N (`groups` = 2), exactly
 * as two separate passes of the reference would, and updates the running statistics twice. */
#ifndef VICREG_NN_H
#define VICREG_NN_H

#include "vicreg/backend.h"
#include "vicreg/params.h"
#include "vicreg/rng.h"

/* What a layer needs to run: the backend and the model's storage (device pointers). */
typedef struct vr_ctx {
    vr_backend *be;
    const float *p;   /* parameter values */
    float *g;         /* parameter gradients, same layout; += */
    float *buf;       /* BatchNorm running statistics */
    int64_t *counts;  /* num_batches_tracked, host */
    float *ws;        /* activation workspace */
    int n;            /* samples in this pass, at most the planned batch */
    int groups;       /* BatchNorm statistic groups (n divisible by groups) */
    int train;        /* batch statistics and running-stat updates when non-zero */
    const vr_bn_sync *sync; /* SyncBN over the ranks of a data-parallel run; NULL: local */
    /* Called by a backward pass as soon as the parameter gradients of its branch at offsets
     * >= from are final (a branch declares its parameters in forward order, so its backward
     * finishes them from the last to the first): a data-parallel step starts their sum over
     * the ranks while the backward goes on. NULL: nobody is waiting. */
    vr_status (*grads_ready)(void *ctx, size_t from);
    void *grads_ctx;
} vr_ctx;

/* Tells c's grads_ready, if any, that the gradients at offsets >= from are final. */
static inline vr_status vr_ctx_grads_ready(const vr_ctx *c, size_t from)
{
    return c->grads_ready ? c->grads_ready(c->grads_ctx, from) : VR_OK;
}

/* A convolution without bias followed by BatchNorm (the only conv form in a ResNet). */
typedef struct vr_convbn {
    int cin, cout, k, stride, pad;
    size_t w, gamma, beta;  /* parameter offsets; w (Cout,Cin,k[,k]) */
    size_t rmean, rvar;     /* buffer offsets */
    int counter;            /* num_batches_tracked index */
    int h_in, w_in, h_out, w_out;
    size_t conv_out;        /* ws (N,Cout,OH,OW): BN input */
    size_t out;             /* ws (N,Cout,OH,OW): BN output after the fused residual/ReLU */
    size_t stats;           /* ws (groups,2,Cout): mean, invstd per group */
} vr_convbn;

typedef struct vr_block {
    vr_convbn conv[3];      /* basic: 2 (3x3, 3x3); bottleneck: 3 (1x1, 3x3 strided, 1x1) */
    int nconv;
    vr_convbn down;         /* 1x1 strided conv + BN on the shortcut */
    int has_down;
} vr_block;

typedef struct vr_resnet_config {
    int depth;              /* 18, 34 or 50 */
    int rank;               /* spatial rank: 1 (N,C,L) or 2 (N,C,H,W) */
    int in_channels;
    int widths[4];          /* planes per stage; output = widths[3] * expansion */
    int stem_kernel, stem_stride, stem_pad;
    int pool_kernel, pool_stride, pool_pad; /* pool_kernel 0: no max pool */
    int zero_init_residual; /* last BN of every block starts at gamma 0 */
} vr_resnet_config;

typedef struct vr_resnet {
    vr_resnet_config cfg;
    int expansion, out_dim;
    vr_convbn stem;
    int pool_h, pool_w;
    size_t pool_out, pool_arg; /* ws (N,C,PH,PW) activation and its int32 argmax */
    vr_block *blocks;
    int nblocks;
    size_t repr;               /* ws (N, out_dim) float32 */
    size_t grad[4];            /* ws scratch for the backward: activations */
    size_t input;              /* ws (N,Cin,H,W): the input as an activation, where the
                                  backend's activations are not float32 (N,C,H,W) */
    int imports;               /* the input goes through `input` */
    int plan_n, plan_h, plan_w;
} vr_resnet;

/* torchvision's defaults for depth and rank 2 (widths 64..512, stem 7/2/3, max pool 3/2/1) */
void vr_resnet_config_default(vr_resnet_config *c, int depth, int rank, int in_channels);
vr_status vr_resnet_declare(vr_resnet *r, const vr_resnet_config *cfg, const char *prefix,
                            vr_paramset *params, vr_paramset *buffers, vr_counters *counts);
/* Assigns workspace offsets for batch n of (h, w) inputs (h = 1 for rank 1) from *cursor,
 * activations sized as be stores them. */
vr_status vr_resnet_plan(vr_resnet *r, const vr_backend *be, int n, int h, int w, size_t *cursor);
/* x (N,Cin,H,W) float32 -> ws + repr (N, out_dim) float32 */
vr_status vr_resnet_forward(vr_resnet *r, const vr_ctx *c, const float *x);
/* drepr (N, out_dim) -> parameter gradients += ; dx (N,Cin,H,W) float32 when not NULL (where
 * the input was imported, its gradient is made in the imported copy's place: a second backward
 * needs a new forward) */
vr_status vr_resnet_backward(vr_resnet *r, const vr_ctx *c, const float *x, const float *drepr,
                             float *dx);
/* kaiming-normal fan_out convs, BN gamma 1 beta 0 (0 on each block's last BN when
 * zero_init_residual), running mean 0 var 1; host memory of the model's layouts */
void vr_resnet_init(const vr_resnet *r, float *p, float *buf, vr_rng *rng);
void vr_resnet_free(vr_resnet *r);

/* BatchNorm statistic groups a plan makes room for (two views in one pass) */
#define VR_MAX_GROUPS 2

#define VR_EXPANDER_MAX 8

/* "2048-8192-8192-8192": Linear -> BatchNorm1d -> ReLU for each hidden layer, last Linear
 * without bias; names prefix.0.weight, prefix.1.running_mean, ... as nn.Sequential. */
typedef struct vr_expander {
    int nlayers;                    /* linear layers */
    int dims[VR_EXPANDER_MAX + 1];
    struct {
        size_t w, b;                /* b: bias offset (hidden layers only) */
        size_t gamma, beta, rmean, rvar;
        int counter;
        size_t lin_out, out, stats; /* ws */
    } layer[VR_EXPANDER_MAX];
    size_t grad[2];                 /* ws scratch for the backward */
    int plan_n;
} vr_expander;

vr_status vr_expander_declare(vr_expander *e, const char *spec, const char *prefix,
                              vr_paramset *params, vr_paramset *buffers, vr_counters *counts);
vr_status vr_expander_plan(vr_expander *e, int n, size_t *cursor);
/* x (N, dims[0]) -> embedding (N, dims[last]) at vr_expander_output */
vr_status vr_expander_forward(vr_expander *e, const vr_ctx *c, const float *x);
const float *vr_expander_output(const vr_expander *e, const vr_ctx *c);
/* dz (N, dims[last]) -> parameter gradients += ; dx (N, dims[0]) overwritten when not NULL */
vr_status vr_expander_backward(vr_expander *e, const vr_ctx *c, const float *x, const float *dz,
                               float *dx);
/* PyTorch's Linear default (uniform +-1/sqrt(in) for weight and bias), BN gamma 1 beta 0 */
void vr_expander_init(const vr_expander *e, float *p, float *buf, vr_rng *rng);

#endif
