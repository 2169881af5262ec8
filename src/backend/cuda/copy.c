/* Input copies that overlap compute: a copy stream beside the compute stream, and two slots,
 * each the event that ends one copy, so a training loop can fill one device buffer while the
 * compute stream reads the other.
 *
 * Ordering: copy_start records `queued` on the compute stream and makes the copy stream wait
 * for it, so a copy never overwrites a buffer that work queued before it still reads; the copy
 * then records copied[slot]. copy_join makes the compute stream wait for copied[slot] (the
 * kernels queued afterwards see the data); copy_wait makes the host wait for it (the host
 * memory may then change). Copies from pinned memory run on the copy engine while kernels run;
 * from pageable memory the runtime stages them, still correct. */
#include "cuda.h"

vr_status vr_cuda_copy_open(vr_cuda_ctx *c)
{
    VR_CUDA_TRY(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    VR_CUDA_TRY(cudaEventCreateWithFlags(&c->queued, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++)
        VR_CUDA_TRY(cudaEventCreateWithFlags(&c->copied[i], cudaEventDisableTiming));
    return VR_OK;
}

void vr_cuda_copy_close(vr_cuda_ctx *c)
{
    if (c->copy_stream) cudaStreamSynchronize(c->copy_stream);
    for (int i = 0; i < 2; i++)
        if (c->copied[i]) cudaEventDestroy(c->copied[i]);
    if (c->queued) cudaEventDestroy(c->queued);
    if (c->copy_stream) cudaStreamDestroy(c->copy_stream);
}

vr_status vr_cuda_pin(vr_backend *be, void *host, size_t bytes)
{
    (void)be;
    cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterDefault);
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
        cudaGetLastError(); /* not sticky */
        return VR_OK;
    }
    if (e != cudaSuccess) cudaGetLastError();
    return vr_cuda_check(e, "cudaHostRegister");
}

void vr_cuda_unpin(vr_backend *be, void *host)
{
    (void)be;
    if (cudaHostUnregister(host) != cudaSuccess) cudaGetLastError();
}

static vr_status check_slot(int slot)
{
    if (slot < 0 || slot > 1)
        return vr_fail(VR_ERR_ARG, "cuda", "copy slot %d (0 or 1)", slot);
    return VR_OK;
}

vr_status vr_cuda_copy_start(vr_backend *be, int slot, float *dst, const float *host_src,
                             size_t count)
{
    VR_TRY(check_slot(slot));
    vr_cuda_ctx *c = vr_cuda(be);
    VR_CUDA_TRY(cudaEventRecord(c->queued, c->stream));
    VR_CUDA_TRY(cudaStreamWaitEvent(c->copy_stream, c->queued, 0));
    if (count)
        VR_CUDA_TRY(cudaMemcpyAsync(dst, host_src, count * sizeof(float), cudaMemcpyHostToDevice,
                                    c->copy_stream));
    VR_CUDA_TRY(cudaEventRecord(c->copied[slot], c->copy_stream));
    return VR_OK;
}

vr_status vr_cuda_copy_join(vr_backend *be, int slot)
{
    VR_TRY(check_slot(slot));
    vr_cuda_ctx *c = vr_cuda(be);
    VR_CUDA_TRY(cudaStreamWaitEvent(c->stream, c->copied[slot], 0));
    return VR_OK;
}

vr_status vr_cuda_copy_wait(vr_backend *be, int slot)
{
    VR_TRY(check_slot(slot));
    VR_CUDA_TRY(cudaEventSynchronize(vr_cuda(be)->copied[slot]));
    return VR_OK;
}
