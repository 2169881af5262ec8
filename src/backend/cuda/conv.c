/* Convolutions on the GPU through cuDNN: forward, backward data, backward filter (+ bias).
 *
 * A plan per window is made on its first use and kept in the backend context: cuDNN's
 * descriptors and, for each of the three directions, the algorithm cuDNN's own search
 * (cudnnFind*, which times every algorithm once; cudnnGet*_v7's heuristic where the search
 * fails) found fastest among those whose workspace fits VR_CONV_WS_MAX. The workspace comes
 * from the backend's scratch, which grows to the largest plan once and is then reused.
 *
 * Math modes (cuda.h): FP32 runs NCHW float32 with FMA math only (no TF32); TF32 runs NCHW
 * float32 with cuDNN's default math, which may use TF32 tensor cores (PyTorch's default); BF16
 * (cuda-bf16, whose activations are bfloat16 NHWC already) converts only the float32 filter
 * into bfloat16 NHWC in scratch (layout.cu), convolves with float32 accumulation on tensor
 * cores, and adds the filter gradient back into float32 dw; a window with no bfloat16
 * algorithm falls back to TF32 on float32 NCHW copies of its activations. Biases are added and
 * reduced in float32 NCHW in every mode. */
#include "cuda.h"

#include <string.h>

/* Largest workspace an algorithm may ask for: the fastest ResNet algorithms need far less,
 * and the bound keeps one greedy algorithm from taking a large share of the device. */
#define VR_CONV_WS_MAX ((size_t)1 << 30)

/* Algorithms cuDNN can return per direction (more than any version has). */
#define VR_CONV_ALGOS 16

struct vr_cuda_conv {
    vr_window win;
    int bf16;                          /* operands in bfloat16 NHWC (else float32 NCHW) */
    cudnnTensorDescriptor_t x, y;      /* input and output in the compute type and layout */
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnTensorDescriptor_t y32, b32;  /* float32 NCHW output and (1,Cout,1,1) bias */
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
};

static vr_status conv_check(cudnnStatus_t s, const char *call, const vr_window *d)
{
    if (s == CUDNN_STATUS_SUCCESS) return VR_OK;
    return vr_fail(VR_ERR_DEVICE, "cuda",
                   "%s on conv n %d, %d->%d channels, %dx%d in, kernel %dx%d, stride %dx%d, pad "
                   "%dx%d: %s", call, d->n, d->c_in, d->c_out, d->h_in, d->w_in, d->kh, d->kw,
                   d->sh, d->sw, d->ph, d->pw, cudnnGetErrorString(s));
}
#define CONV_TRY(call, name, d) VR_TRY(conv_check((call), (name), (d)))

static int same_window(const vr_window *a, const vr_window *b)
{
    return a->n == b->n && a->c_in == b->c_in && a->c_out == b->c_out && a->h_in == b->h_in &&
           a->w_in == b->w_in && a->kh == b->kh && a->kw == b->kw && a->sh == b->sh &&
           a->sw == b->sw && a->ph == b->ph && a->pw == b->pw && a->h_out == b->h_out &&
           a->w_out == b->w_out;
}

static void plan_undescribe(vr_cuda_conv *p)
{
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->y32) cudnnDestroyTensorDescriptor(p->y32);
    if (p->b32) cudnnDestroyTensorDescriptor(p->b32);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    p->x = p->y = p->y32 = p->b32 = NULL;
    p->w = NULL;
    p->conv = NULL;
}

static void plan_free(vr_cuda_conv *p)
{
    if (!p) return;
    plan_undescribe(p);
    free(p);
}

void vr_cuda_conv_plans_free(vr_cuda_ctx *c)
{
    for (int i = 0; i < c->nconvs; i++) plan_free(c->convs[i]);
    free(c->convs);
    c->convs = NULL;
    c->nconvs = c->cap_convs = 0;
}

/* The descriptors of window d in math mode `math`; cuDNN's output size must be the window's. */
static vr_status plan_describe(vr_cuda_conv *p, const vr_window *d, vr_cuda_math math)
{
    const int bf16 = math == VR_CUDA_BF16;
    p->bf16 = bf16;
    const cudnnTensorFormat_t fmt = bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    const cudnnDataType_t type = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    CONV_TRY(cudnnCreateTensorDescriptor(&p->x), "cudnnCreateTensorDescriptor", d);
    CONV_TRY(cudnnCreateTensorDescriptor(&p->y), "cudnnCreateTensorDescriptor", d);
    CONV_TRY(cudnnCreateTensorDescriptor(&p->y32), "cudnnCreateTensorDescriptor", d);
    CONV_TRY(cudnnCreateTensorDescriptor(&p->b32), "cudnnCreateTensorDescriptor", d);
    CONV_TRY(cudnnCreateFilterDescriptor(&p->w), "cudnnCreateFilterDescriptor", d);
    CONV_TRY(cudnnCreateConvolutionDescriptor(&p->conv), "cudnnCreateConvolutionDescriptor", d);
    CONV_TRY(cudnnSetTensor4dDescriptor(p->x, fmt, type, d->n, d->c_in, d->h_in, d->w_in),
             "cudnnSetTensor4dDescriptor (input)", d);
    CONV_TRY(cudnnSetTensor4dDescriptor(p->y, fmt, type, d->n, d->c_out, d->h_out, d->w_out),
             "cudnnSetTensor4dDescriptor (output)", d);
    CONV_TRY(cudnnSetTensor4dDescriptor(p->y32, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->n,
                                        d->c_out, d->h_out, d->w_out),
             "cudnnSetTensor4dDescriptor (float32 output)", d);
    CONV_TRY(cudnnSetTensor4dDescriptor(p->b32, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, d->c_out,
                                        1, 1),
             "cudnnSetTensor4dDescriptor (bias)", d);
    CONV_TRY(cudnnSetFilter4dDescriptor(p->w, type, fmt, d->c_out, d->c_in, d->kh, d->kw),
             "cudnnSetFilter4dDescriptor", d);
    /* cross-correlation is what PyTorch (and the CPU backend) call convolution; the
     * accumulation is float32 in every mode */
    CONV_TRY(cudnnSetConvolution2dDescriptor(p->conv, d->ph, d->pw, d->sh, d->sw, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
             "cudnnSetConvolution2dDescriptor", d);
    int on, oc, oh, ow;
    CONV_TRY(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &on, &oc, &oh, &ow),
             "cudnnGetConvolution2dForwardOutputDim", d);
    if (on != d->n || oc != d->c_out || oh != d->h_out || ow != d->w_out)
        return vr_fail(VR_ERR_SHAPE, "cuda",
                       "conv: cuDNN gives output (%d,%d,%d,%d) for a window of (%d,%d,%d,%d)", on,
                       oc, oh, ow, d->n, d->c_out, d->h_out, d->w_out);
    return VR_OK;
}

/* Sets the math type a search of mode `math` runs under; each search sets it afresh, since the
 * one before left its winner's (a bfloat16 forward won by a CUDNN_DEFAULT_MATH algorithm would
 * otherwise keep the backward searches from the tensor-core algorithms). */
static vr_status search_math(vr_cuda_conv *p, vr_cuda_math math)
{
    const cudnnMathType_t m = math == VR_CUDA_FP32   ? CUDNN_FMA_MATH
                              : math == VR_CUDA_TF32 ? CUDNN_DEFAULT_MATH
                                                     : CUDNN_TENSOR_OP_MATH;
    CONV_TRY(cudnnSetConvolutionMathType(p->conv, m), "cudnnSetConvolutionMathType", &p->win);
    return VR_OK;
}

/* May an algorithm cuDNN reported be used? It ran (or would run), its workspace fits, and in
 * FP32 mode it computes without tensor cores. */
static int usable(vr_cuda_math math, cudnnStatus_t status, size_t memory, cudnnMathType_t m)
{
    if (status != CUDNN_STATUS_SUCCESS || memory > VR_CONV_WS_MAX) return 0;
    return math != VR_CUDA_FP32 || (m != CUDNN_TENSOR_OP_MATH &&
                                    m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

static vr_status no_algorithm(const char *direction, const vr_window *d)
{
    return vr_fail(VR_ERR_UNSUPPORTED, "cuda",
                   "no usable cuDNN %s algorithm for conv n %d, %d->%d channels, %dx%d in, "
                   "kernel %dx%d, stride %dx%d, pad %dx%d", direction, d->n, d->c_in, d->c_out,
                   d->h_in, d->w_in, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw);
}

/* In FP32 mode every call runs with FMA math, whatever the search reported. */
static cudnnMathType_t run_math(vr_cuda_math math, cudnnMathType_t found)
{
    return math == VR_CUDA_FP32 ? CUDNN_FMA_MATH : found;
}

/* The three searches have the same shape; each sets the algorithm, its math and its workspace
 * from the first usable entry of cuDNN's list (fastest first for Find; best first by the
 * heuristic for Get_v7). */
static vr_status choose_fwd(vr_backend *be, vr_cuda_conv *p, vr_cuda_math math)
{
    vr_cuda_ctx *c = vr_cuda(be);
    cudnnConvolutionFwdAlgoPerf_t r[VR_CONV_ALGOS];
    int got = 0;
    VR_TRY(search_math(p, math));
    cudnnStatus_t s = cudnnFindConvolutionForwardAlgorithm(c->dnn, p->x, p->w, p->conv, p->y,
                                                           VR_CONV_ALGOS, &got, r);
    if (s != CUDNN_STATUS_SUCCESS)
        CONV_TRY(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->x, p->w, p->conv, p->y,
                                                        VR_CONV_ALGOS, &got, r),
                 "cudnnGetConvolutionForwardAlgorithm_v7", &p->win);
    for (int i = 0; i < got; i++)
        if (usable(math, r[i].status, r[i].memory, r[i].mathType)) {
            p->fwd = r[i].algo;
            p->fwd_math = run_math(math, r[i].mathType);
            CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->fwd_math),
                     "cudnnSetConvolutionMathType", &p->win);
            CONV_TRY(cudnnGetConvolutionForwardWorkspaceSize(c->dnn, p->x, p->w, p->conv, p->y,
                                                             p->fwd, &p->fwd_ws),
                     "cudnnGetConvolutionForwardWorkspaceSize", &p->win);
            return VR_OK;
        }
    return no_algorithm("forward", &p->win);
}

static vr_status choose_bwd_data(vr_backend *be, vr_cuda_conv *p, vr_cuda_math math)
{
    vr_cuda_ctx *c = vr_cuda(be);
    cudnnConvolutionBwdDataAlgoPerf_t r[VR_CONV_ALGOS];
    int got = 0;
    VR_TRY(search_math(p, math));
    cudnnStatus_t s = cudnnFindConvolutionBackwardDataAlgorithm(c->dnn, p->w, p->y, p->conv,
                                                                p->x, VR_CONV_ALGOS, &got, r);
    if (s != CUDNN_STATUS_SUCCESS)
        CONV_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, p->w, p->y, p->conv, p->x,
                                                             VR_CONV_ALGOS, &got, r),
                 "cudnnGetConvolutionBackwardDataAlgorithm_v7", &p->win);
    for (int i = 0; i < got; i++)
        if (usable(math, r[i].status, r[i].memory, r[i].mathType)) {
            p->bwd_data = r[i].algo;
            p->bwd_data_math = run_math(math, r[i].mathType);
            CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math),
                     "cudnnSetConvolutionMathType", &p->win);
            CONV_TRY(cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, p->w, p->y, p->conv,
                                                                  p->x, p->bwd_data,
                                                                  &p->bwd_data_ws),
                     "cudnnGetConvolutionBackwardDataWorkspaceSize", &p->win);
            return VR_OK;
        }
    return no_algorithm("backward-data", &p->win);
}

static vr_status choose_bwd_filter(vr_backend *be, vr_cuda_conv *p, vr_cuda_math math)
{
    vr_cuda_ctx *c = vr_cuda(be);
    cudnnConvolutionBwdFilterAlgoPerf_t r[VR_CONV_ALGOS];
    int got = 0;
    VR_TRY(search_math(p, math));
    cudnnStatus_t s = cudnnFindConvolutionBackwardFilterAlgorithm(c->dnn, p->x, p->y, p->conv,
                                                                  p->w, VR_CONV_ALGOS, &got, r);
    if (s != CUDNN_STATUS_SUCCESS)
        CONV_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, p->x, p->y, p->conv, p->w,
                                                               VR_CONV_ALGOS, &got, r),
                 "cudnnGetConvolutionBackwardFilterAlgorithm_v7", &p->win);
    for (int i = 0; i < got; i++)
        if (usable(math, r[i].status, r[i].memory, r[i].mathType)) {
            p->bwd_filter = r[i].algo;
            p->bwd_filter_math = run_math(math, r[i].mathType);
            CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math),
                     "cudnnSetConvolutionMathType", &p->win);
            CONV_TRY(cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, p->x, p->y, p->conv,
                                                                    p->w, p->bwd_filter,
                                                                    &p->bwd_filter_ws),
                     "cudnnGetConvolutionBackwardFilterWorkspaceSize", &p->win);
            return VR_OK;
        }
    return no_algorithm("backward-filter", &p->win);
}

/* All three algorithms of plan p, described in math mode `math`. */
static vr_status plan_search(vr_backend *be, vr_cuda_conv *p, vr_cuda_math math)
{
    VR_TRY(plan_describe(p, &p->win, math));
    VR_TRY(choose_fwd(be, p, math));
    VR_TRY(choose_bwd_data(be, p, math));
    return choose_bwd_filter(be, p, math);
}

/* The plan of window d, made and searched on first use. Where cuDNN has no bfloat16 algorithm
 * for a window (a 3-channel stem may lack one), that window runs in float32 with TF32 math. */
static vr_status plan_for(vr_backend *be, const vr_window *d, vr_cuda_conv **out)
{
    vr_cuda_ctx *c = vr_cuda(be);
    for (int i = 0; i < c->nconvs; i++)
        if (same_window(&c->convs[i]->win, d)) {
            *out = c->convs[i];
            return VR_OK;
        }
    if (c->nconvs == c->cap_convs) {
        int cap = c->cap_convs ? 2 * c->cap_convs : 32;
        vr_cuda_conv **grown = realloc(c->convs, (size_t)cap * sizeof *grown);
        if (!grown) return vr_fail(VR_ERR_NOMEM, "cuda", "cannot grow the convolution plans");
        c->convs = grown;
        c->cap_convs = cap;
    }
    vr_cuda_conv *p = calloc(1, sizeof *p);
    if (!p) return vr_fail(VR_ERR_NOMEM, "cuda", "cannot allocate a convolution plan");
    p->win = *d;
    vr_status s = plan_search(be, p, c->math);
    if (s == VR_ERR_UNSUPPORTED && c->math == VR_CUDA_BF16) {
        plan_undescribe(p);
        s = plan_search(be, p, VR_CUDA_TF32);
    }
    if (s != VR_OK) {
        plan_free(p);
        return s;
    }
    c->convs[c->nconvs++] = p;
    *out = p;
    return VR_OK;
}

/* Scratch of one call (each piece 256-byte aligned): the bfloat16 filter of a BF16 plan; float32
 * (N,C,H,W) copies of the input and output sides where the activations are bfloat16 but the
 * plan is not (a window without a bfloat16 algorithm) or a bias needs them; the workspace. */
typedef struct conv_scratch {
    void *wb;
    float *x32, *y32;
    void *ws;
} conv_scratch;

static size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

static vr_status conv_scratch_get(vr_backend *be, const vr_cuda_conv *p, size_t ws, int x32,
                                  int y32, conv_scratch *s)
{
    const vr_window *d = &p->win;
    size_t wb = p->bf16 ? align256((size_t)d->c_out * d->c_in * d->kh * d->kw * 2) : 0;
    size_t xb = x32 ? align256((size_t)d->n * d->c_in * d->h_in * d->w_in * sizeof(float)) : 0;
    size_t yb = y32 ? align256((size_t)d->n * d->c_out * d->h_out * d->w_out * sizeof(float)) : 0;
    void *base;
    VR_TRY(vr_cuda_scratch(be, wb + xb + yb + ws, &base));
    char *b = (char *)base;
    s->wb = b;
    s->x32 = (float *)(b + wb);
    s->y32 = (float *)(b + wb + xb);
    s->ws = b + wb + xb + yb;
    return VR_OK;
}

/* float32 NCHW -> bfloat16 NHWC of the window's input (N,Cin,H*W), filter (Cout,Cin,KH*KW) or
 * output (N,Cout,OH*OW) */
static vr_status to_bf16(vr_backend *be, int n, int c, int sp, const float *src, void *dst)
{
    return vr_cuda_check(vr_cuda_to_nhwc_bf16(vr_cuda(be)->stream, n, c, sp, src, dst),
                         "vr_cuda_to_nhwc_bf16");
}

static vr_status from_bf16(vr_backend *be, int n, int c, int sp, const void *src, int accumulate,
                           float *dst)
{
    return vr_cuda_check(vr_cuda_from_nhwc_bf16(vr_cuda(be)->stream, n, c, sp, src, accumulate,
                                                dst),
                         "vr_cuda_from_nhwc_bf16");
}

/* Activations of this backend in bfloat16 channels last (cuda-bf16). */
static int act_bf16(const vr_backend *be) { return be->act == VR_ACT_BF16_NHWC; }

vr_status vr_cuda_conv_forward(vr_backend *be, const vr_window *d, const float *x,
                               const float *w, const float *b, float *y)
{
    vr_cuda_ctx *c = vr_cuda(be);
    vr_cuda_conv *p;
    VR_TRY(plan_for(be, d, &p));
    const int act = act_bf16(be), fallback = act && !p->bf16;
    const int in = d->h_in * d->w_in, out = d->h_out * d->w_out;
    conv_scratch s;
    VR_TRY(conv_scratch_get(be, p, p->fwd_ws, fallback, act && (fallback || b), &s));
    if (p->bf16) VR_TRY(to_bf16(be, d->c_out, d->c_in, d->kh * d->kw, w, s.wb));
    if (fallback) VR_TRY(from_bf16(be, d->n, d->c_in, in, x, 0, s.x32));
    const float one = 1.0f, zero = 0.0f;
    CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->fwd_math), "cudnnSetConvolutionMathType", d);
    CONV_TRY(cudnnConvolutionForward(c->dnn, &one, p->x, fallback ? (const void *)s.x32 : x, p->w,
                                     p->bf16 ? s.wb : (const void *)w, p->conv, p->fwd, s.ws,
                                     p->fwd_ws, &zero, p->y, fallback ? (void *)s.y32 : y),
             "cudnnConvolutionForward", d);
    if (!b) return fallback ? to_bf16(be, d->n, d->c_out, out, s.y32, y) : VR_OK;
    /* the bias is added in float32 (N,C,H,W) */
    float *y32 = act ? s.y32 : y;
    if (act && !fallback) VR_TRY(from_bf16(be, d->n, d->c_out, out, y, 0, y32));
    CONV_TRY(cudnnAddTensor(c->dnn, &one, p->b32, b, &one, p->y32, y32), "cudnnAddTensor", d);
    return act ? to_bf16(be, d->n, d->c_out, out, y32, y) : VR_OK;
}

vr_status vr_cuda_conv_backward_data(vr_backend *be, const vr_window *d, const float *dy,
                                     const float *w, float *dx)
{
    vr_cuda_ctx *c = vr_cuda(be);
    vr_cuda_conv *p;
    VR_TRY(plan_for(be, d, &p));
    const int fallback = act_bf16(be) && !p->bf16;
    conv_scratch s;
    VR_TRY(conv_scratch_get(be, p, p->bwd_data_ws, fallback, fallback, &s));
    if (p->bf16) VR_TRY(to_bf16(be, d->c_out, d->c_in, d->kh * d->kw, w, s.wb));
    if (fallback) VR_TRY(from_bf16(be, d->n, d->c_out, d->h_out * d->w_out, dy, 0, s.y32));
    const float one = 1.0f, zero = 0.0f;
    CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math),
             "cudnnSetConvolutionMathType", d);
    CONV_TRY(cudnnConvolutionBackwardData(c->dnn, &one, p->w, p->bf16 ? s.wb : (const void *)w,
                                          p->y, fallback ? (const void *)s.y32 : dy, p->conv,
                                          p->bwd_data, s.ws, p->bwd_data_ws, &zero, p->x,
                                          fallback ? (void *)s.x32 : dx),
             "cudnnConvolutionBackwardData", d);
    return fallback ? to_bf16(be, d->n, d->c_in, d->h_in * d->w_in, s.x32, dx) : VR_OK;
}

vr_status vr_cuda_conv_backward_weight(vr_backend *be, const vr_window *d, const float *x,
                                       const float *dy, float *dw, float *db)
{
    vr_cuda_ctx *c = vr_cuda(be);
    vr_cuda_conv *p;
    VR_TRY(plan_for(be, d, &p));
    const int act = act_bf16(be), fallback = act && !p->bf16, dy32 = act && (fallback || db);
    conv_scratch s;
    VR_TRY(conv_scratch_get(be, p, p->bwd_filter_ws, fallback, dy32, &s));
    if (fallback) VR_TRY(from_bf16(be, d->n, d->c_in, d->h_in * d->w_in, x, 0, s.x32));
    if (dy32) VR_TRY(from_bf16(be, d->n, d->c_out, d->h_out * d->w_out, dy, 0, s.y32));
    const float one = 1.0f, zero = 0.0f;
    CONV_TRY(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math),
             "cudnnSetConvolutionMathType", d);
    /* float32 filters: dw += directly (beta 1); bfloat16: into scratch (beta 0), then added */
    CONV_TRY(cudnnConvolutionBackwardFilter(c->dnn, &one, p->x,
                                            fallback ? (const void *)s.x32 : x, p->y,
                                            fallback ? (const void *)s.y32 : dy, p->conv,
                                            p->bwd_filter, s.ws, p->bwd_filter_ws,
                                            p->bf16 ? &zero : &one, p->w,
                                            p->bf16 ? s.wb : (void *)dw),
             "cudnnConvolutionBackwardFilter", d);
    if (p->bf16) VR_TRY(from_bf16(be, d->c_out, d->c_in, d->kh * d->kw, s.wb, 1, dw));
    if (db)
        CONV_TRY(cudnnConvolutionBackwardBias(c->dnn, &one, p->y32, dy32 ? (const void *)s.y32 : dy,
                                              &one, p->b32, db),
                 "cudnnConvolutionBackwardBias", d);
    return VR_OK;
}
