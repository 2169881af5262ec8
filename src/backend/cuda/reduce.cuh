/* Device helpers shared by the CUDA kernels: block-wide sums in double, in a fixed order, so a
 * reduction over a fixed grid gives the same bits on every run. */
#ifndef VR_CUDA_REDUCE_CUH
#define VR_CUDA_REDUCE_CUH

/* Threads of every 1-D block that reduces (a power of two, as vr_block_sum needs). */
#define VR_CUDA_THREADS 256

/* The sum of v over the block's VR_CUDA_THREADS threads, returned to every thread. sh is
 * VR_CUDA_THREADS doubles of shared memory, free again when this returns. */
static __device__ __forceinline__ double vr_block_sum(double v, double *sh)
{
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned h = VR_CUDA_THREADS / 2; h > 0; h >>= 1) {
        if (t < h) sh[t] += sh[t + h];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

/* The error of the last launch (and clears it): launches report configuration errors only
 * here; errors while running surface at the next wait. */
static inline vr_status vr_cuda_launched(const char *kernel)
{
    return vr_cuda_check(cudaGetLastError(), kernel);
}

#endif
