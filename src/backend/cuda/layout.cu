/* Layout and type conversions between float32 (N,C,S) and bfloat16 (N,S,C), i.e. NCHW <-> NHWC
 * with S = H*W (for filters, (Cout,Cin,KH*KW) <-> (Cout,KH*KW,Cin)), the layout in which cuDNN
 * runs bfloat16 convolutions on tensor cores and in which cuda-bf16 keeps its activations
 * (act_import, act_export).
 *
 * Each is the transpose of N (C,S) matrices through a 32 x 33 tile of shared memory (the extra
 * column keeps the column reads free of bank conflicts), so reads and writes are both
 * coalesced: one block of 32 x 8 threads moves a 32 x 32 tile, each thread four elements. */
#include "cuda.h"

#include <cuda_bf16.h>

#define TILE 32
#define ROWS 8

/* grid (ceil(S/32), ceil(C/32), N): dst[n][p][c] = bf16(src[n][c][p]) */
static __global__ void to_nhwc_k(int c, int sp, const float *src, __nv_bfloat16 *dst)
{
    __shared__ float tile[TILE][TILE + 1]; /* [c - c0][p - p0] */
    const size_t n = blockIdx.z;
    const int c0 = blockIdx.y * TILE, p0 = blockIdx.x * TILE;
    for (int r = threadIdx.y; r < TILE; r += ROWS) {
        int ci = c0 + r, pi = p0 + threadIdx.x;
        if (ci < c && pi < sp) tile[r][threadIdx.x] = src[(n * c + ci) * sp + pi];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < TILE; r += ROWS) {
        int pi = p0 + r, ci = c0 + threadIdx.x;
        if (pi < sp && ci < c) dst[(n * sp + pi) * c + ci] = __float2bfloat16(tile[threadIdx.x][r]);
    }
}

/* grid (ceil(C/32), ceil(S/32), N): dst[n][c][p] = src[n][p][c] (+ dst when accumulating) */
static __global__ void from_nhwc_k(int c, int sp, const __nv_bfloat16 *src, int accumulate,
                                   float *dst)
{
    __shared__ float tile[TILE][TILE + 1]; /* [p - p0][c - c0] */
    const size_t n = blockIdx.z;
    const int c0 = blockIdx.x * TILE, p0 = blockIdx.y * TILE;
    for (int r = threadIdx.y; r < TILE; r += ROWS) {
        int pi = p0 + r, ci = c0 + threadIdx.x;
        if (pi < sp && ci < c) tile[r][threadIdx.x] = __bfloat162float(src[(n * sp + pi) * c + ci]);
    }
    __syncthreads();
    for (int r = threadIdx.y; r < TILE; r += ROWS) {
        int ci = c0 + r, pi = p0 + threadIdx.x;
        if (ci < c && pi < sp) {
            float *o = dst + (n * c + ci) * sp + pi;
            /* overwriting never reads dst, which may hold anything */
            *o = accumulate ? *o + tile[threadIdx.x][r] : tile[threadIdx.x][r];
        }
    }
}

/* grid dimensions y and z are limited to 65535 */
static int fits(int n, int c, int sp)
{
    return n >= 1 && c >= 1 && sp >= 1 && n <= 65535 && (c + TILE - 1) / TILE <= 65535 &&
           (sp + TILE - 1) / TILE <= 65535;
}

extern "C" cudaError_t vr_cuda_to_nhwc_bf16(cudaStream_t s, int n, int c, int sp,
                                            const float *src, void *dst)
{
    if (!fits(n, c, sp)) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((sp + TILE - 1) / TILE), (unsigned)((c + TILE - 1) / TILE), (unsigned)n);
    to_nhwc_k<<<grid, dim3(TILE, ROWS), 0, s>>>(c, sp, src, (__nv_bfloat16 *)dst);
    return cudaGetLastError();
}

extern "C" cudaError_t vr_cuda_from_nhwc_bf16(cudaStream_t s, int n, int c, int sp,
                                              const void *src, int accumulate, float *dst)
{
    if (!fits(n, c, sp)) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((c + TILE - 1) / TILE), (unsigned)((sp + TILE - 1) / TILE), (unsigned)n);
    from_nhwc_k<<<grid, dim3(TILE, ROWS), 0, s>>>(c, sp, (const __nv_bfloat16 *)src, accumulate,
                                                  dst);
    return cudaGetLastError();
}

extern "C" vr_status vr_cuda_act_import(vr_backend *be, int n, int c, int s, const float *src,
                                        float *dst)
{
    return vr_cuda_check(vr_cuda_to_nhwc_bf16(vr_cuda(be)->stream, n, c, s, src, dst),
                         "act_import (to bfloat16 channels last)");
}

extern "C" vr_status vr_cuda_act_export(vr_backend *be, int n, int c, int s, const float *src,
                                        float *dst)
{
    return vr_cuda_check(vr_cuda_from_nhwc_bf16(vr_cuda(be)->stream, n, c, s, src, 0, dst),
                         "act_export (from bfloat16 channels last)");
}
