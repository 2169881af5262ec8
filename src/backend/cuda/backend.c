/* The CUDA backend's table, context and device memory, and the translation of CUDA, cuBLAS and
 * cuDNN statuses into vr_status.
 *
 * Names: "cuda" computes in float32 throughout; "cuda-tf32" lets convolutions and linear layers
 * use TF32 tensor cores (PyTorch's default for cuDNN convolutions); "cuda-bf16" runs them in
 * bfloat16 with float32 accumulation (mixed precision). All three keep parameters, gradients,
 * optimiser state, batch norm and the loss in float32. The backend uses device 0, or under an
 * MPI launcher its local rank's device. */
#include "cuda.h"

#include <string.h>

vr_status vr_cuda_check(cudaError_t e, const char *call)
{
    if (e == cudaSuccess) return VR_OK;
    return vr_fail(VR_ERR_DEVICE, "cuda", "%s: %s (%s)", call, cudaGetErrorString(e),
                   cudaGetErrorName(e));
}

vr_status vr_cublas_check(cublasStatus_t s, const char *call)
{
    if (s == CUBLAS_STATUS_SUCCESS) return VR_OK;
    return vr_fail(VR_ERR_DEVICE, "cuda", "%s: %s", call, cublasGetStatusString(s));
}

vr_status vr_cudnn_check(cudnnStatus_t s, const char *call)
{
    if (s == CUDNN_STATUS_SUCCESS) return VR_OK;
    return vr_fail(VR_ERR_DEVICE, "cuda", "%s: %s", call, cudnnGetErrorString(s));
}

vr_status vr_cuda_wait(vr_backend *be, const char *what)
{
    cudaError_t e = cudaStreamSynchronize(vr_cuda(be)->stream);
    if (e == cudaSuccess) return VR_OK;
    return vr_fail(VR_ERR_DEVICE, "cuda", "%s: queued work failed: %s (%s)", what,
                   cudaGetErrorString(e), cudaGetErrorName(e));
}

vr_status vr_cuda_scratch(vr_backend *be, size_t bytes, void **out)
{
    vr_cuda_ctx *c = vr_cuda(be);
    if (bytes == 0) bytes = 1; /* a real block even for an empty request */
    if (bytes > c->scratch_bytes) {
        size_t want = (bytes + 255) & ~(size_t)255;
        VR_TRY(vr_cuda_wait(be, "growing the scratch"));
        VR_CUDA_TRY(cudaFree(c->scratch));
        c->scratch = NULL;
        c->scratch_bytes = 0;
        cudaError_t e = cudaMalloc(&c->scratch, want);
        if (e != cudaSuccess) {
            c->scratch = NULL;
            return vr_fail(VR_ERR_NOMEM, "cuda", "cannot allocate %zu bytes of device scratch: %s",
                           want, cudaGetErrorString(e));
        }
        c->scratch_bytes = want;
    }
    *out = c->scratch;
    return VR_OK;
}

vr_status vr_cuda_read_doubles(vr_backend *be, const double *dev, int count, const double **out)
{
    vr_cuda_ctx *c = vr_cuda(be);
    VR_ASSERT(count > 0 && count <= VR_CUDA_PINNED);
    VR_CUDA_TRY(cudaMemcpyAsync(c->pinned, dev, (size_t)count * sizeof(double),
                                cudaMemcpyDeviceToHost, c->stream));
    VR_TRY(vr_cuda_wait(be, "reading results"));
    *out = c->pinned;
    return VR_OK;
}

/* Setup-time allocation; zeroed, as the CPU backend's. */
static vr_status cuda_alloc(vr_backend *be, size_t bytes, float **out)
{
    void *p = NULL;
    size_t want = bytes ? bytes : 256;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        *out = NULL;
        return vr_fail(VR_ERR_NOMEM, "cuda", "cannot allocate %zu bytes of device memory: %s",
                       want, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(p, 0, want, vr_cuda(be)->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        *out = NULL;
        return vr_cuda_check(e, "cudaMemsetAsync");
    }
    *out = p;
    return VR_OK;
}

/* Waits for queued work first: a kernel may still read the block, or an input copy write it. */
static void cuda_free(vr_backend *be, float *p)
{
    if (!p) return;
    vr_cuda_ctx *c = vr_cuda(be);
    cudaStreamSynchronize(c->stream);
    if (c->copy_stream) cudaStreamSynchronize(c->copy_stream);
    cudaFree(p);
}

/* The host buffer may be reused as soon as this returns, so the copy is waited for. */
static vr_status cuda_upload(vr_backend *be, float *dst, const float *host_src, size_t count)
{
    if (!count) return VR_OK;
    VR_CUDA_TRY(cudaMemcpyAsync(dst, host_src, count * sizeof(float), cudaMemcpyHostToDevice,
                                vr_cuda(be)->stream));
    return vr_cuda_wait(be, "upload");
}

static vr_status cuda_download(vr_backend *be, float *host_dst, const float *src, size_t count)
{
    if (!count) return VR_OK;
    VR_CUDA_TRY(cudaMemcpyAsync(host_dst, src, count * sizeof(float), cudaMemcpyDeviceToHost,
                                vr_cuda(be)->stream));
    return vr_cuda_wait(be, "download");
}

static vr_status cuda_sync(vr_backend *be) { return vr_cuda_wait(be, "sync"); }

static void cuda_destroy(vr_backend *be)
{
    vr_cuda_ctx *c = be->ctx;
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        vr_cuda_copy_close(c);
        vr_cuda_conv_plans_free(c);
        if (c->scratch) cudaFree(c->scratch);
        if (c->pinned) cudaFreeHost(c->pinned);
        free(c->sync_host);
        if (c->dnn) cudnnDestroy(c->dnn);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

/* This process's place among the processes of its machine, as the MPI launcher tells it: the
 * device of a data-parallel rank is its local rank modulo the devices; 0 outside a launcher. */
static int local_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

/* The process's device (local rank modulo the devices, so device 0 for one process), if there
 * is one the runtime can use and this build has kernels for. */
static vr_status open_device(vr_cuda_ctx *c, const char *name)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count < 1) {
        const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "the driver lists no device";
        cudaGetLastError(); /* not sticky: leaves the runtime usable for a later attempt */
        return vr_fail(VR_ERR_DEVICE, "cuda", "no CUDA device: %s", why);
    }
    c->device = local_rank() % count;
    VR_CUDA_TRY(cudaSetDevice(c->device));
    int major = 0, minor = 0;
    VR_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device));
    VR_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, c->device));
    /* the kernels are built for sm_80 and sm_90 (and PTX for later ones); bfloat16 tensor
     * cores need 8.0 as well */
    if (major < 8)
        return vr_fail(VR_ERR_UNSUPPORTED, "cuda",
                       "%s: device %d has compute capability %d.%d; this build needs 8.0 or "
                       "later", name, c->device, major, minor);
    return VR_OK;
}

static vr_status open_ctx(vr_cuda_ctx *c, const char *name)
{
    VR_TRY(open_device(c, name));
    VR_CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    VR_CUBLAS_TRY(cublasCreate(&c->blas));
    VR_CUBLAS_TRY(cublasSetStream(c->blas, c->stream));
    cudnnStatus_t ds = cudnnCreate(&c->dnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        c->dnn = NULL;
        /* cuDNN answers NOT_INITIALIZED where the runtime sees no usable device */
        return vr_fail(VR_ERR_DEVICE, "cuda", "%s: cudnnCreate: %s", name, cudnnGetErrorString(ds));
    }
    VR_CUDNN_TRY(cudnnSetStream(c->dnn, c->stream));
    VR_TRY(vr_cuda_copy_open(c));
    void *pinned = NULL;
    VR_CUDA_TRY(cudaMallocHost(&pinned, VR_CUDA_PINNED * sizeof(double)));
    c->pinned = pinned;
    return VR_OK;
}

vr_status vr_cuda_backend_create(const char *name, vr_backend **out)
{
    *out = NULL;
    vr_cuda_math math;
    const char *canonical;
    if (strcmp(name, "cuda") == 0) math = VR_CUDA_FP32, canonical = "cuda";
    else if (strcmp(name, "cuda-tf32") == 0) math = VR_CUDA_TF32, canonical = "cuda-tf32";
    else if (strcmp(name, "cuda-bf16") == 0) math = VR_CUDA_BF16, canonical = "cuda-bf16";
    else
        return vr_fail(VR_ERR_ARG, "backend", "unknown CUDA backend '%s' (cuda, cuda-tf32, cuda-bf16)",
                       name);
    vr_backend *be = calloc(1, sizeof *be);
    vr_cuda_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return vr_fail(VR_ERR_NOMEM, "cuda", "cannot allocate the backend");
    }
    c->math = math;
    *be = (vr_backend){
        .name = canonical,
        .device = VR_DEVICE_CUDA,
        .ctx = c,
        .destroy = cuda_destroy,
        .alloc = cuda_alloc,
        .free = cuda_free,
        .upload = cuda_upload,
        .download = cuda_download,
        .sync = cuda_sync,
        .pin = vr_cuda_pin,
        .unpin = vr_cuda_unpin,
        .copy_start = vr_cuda_copy_start,
        .copy_join = vr_cuda_copy_join,
        .copy_wait = vr_cuda_copy_wait,
        .conv_forward = vr_cuda_conv_forward,
        .conv_backward_data = vr_cuda_conv_backward_data,
        .conv_backward_weight = vr_cuda_conv_backward_weight,
        .bn_forward_train = vr_cuda_bn_forward_train,
        .bn_forward_eval = vr_cuda_bn_forward_eval,
        .bn_backward = vr_cuda_bn_backward,
        .act_bn_forward_train = vr_cuda_bn_forward_train,
        .act_bn_forward_eval = vr_cuda_bn_forward_eval,
        .act_bn_backward = vr_cuda_bn_backward,
        .act_accumulate = vr_cuda_accumulate,
        .relu_forward = vr_cuda_relu_forward,
        .relu_backward = vr_cuda_relu_backward,
        .add = vr_cuda_add,
        .accumulate = vr_cuda_accumulate,
        .fill = vr_cuda_fill,
        .maxpool_forward = vr_cuda_maxpool_forward,
        .maxpool_backward = vr_cuda_maxpool_backward,
        .avgpool_forward = vr_cuda_avgpool_forward,
        .avgpool_backward = vr_cuda_avgpool_backward,
        .linear_forward = vr_cuda_linear_forward,
        .linear_backward = vr_cuda_linear_backward,
        .vicreg_loss = vr_cuda_vicreg_loss,
        .lars_step = vr_cuda_lars_step,
        .sgd_step = vr_cuda_sgd_step,
        .adamw_step = vr_cuda_adamw_step,
        .sum_squares = vr_cuda_sum_squares,
    };
    if (math == VR_CUDA_BF16) { /* activations in bfloat16 channels last */
        be->act = VR_ACT_BF16_NHWC;
        be->act_import = vr_cuda_act_import;
        be->act_export = vr_cuda_act_export;
        be->act_bn_forward_train = vr_cuda_nhwc_bn_forward_train;
        be->act_bn_forward_eval = vr_cuda_nhwc_bn_forward_eval;
        be->act_bn_backward = vr_cuda_nhwc_bn_backward;
        be->act_accumulate = vr_cuda_nhwc_accumulate;
        be->maxpool_forward = vr_cuda_nhwc_maxpool_forward;
        be->maxpool_backward = vr_cuda_nhwc_maxpool_backward;
        be->avgpool_forward = vr_cuda_nhwc_avgpool_forward;
        be->avgpool_backward = vr_cuda_nhwc_avgpool_backward;
    }
    vr_status s = open_ctx(c, canonical);
    if (s != VR_OK) {
        cuda_destroy(be);
        return s;
    }
    *out = be;
    return VR_OK;
}
