/* Device helpers for kernels over activations stored either way (backend.h): float32 (N,C,S)
 * or bfloat16 channels last (N,S,C). Kernels are templates over the element type T (float or
 * __nv_bfloat16) and compute in float; ld and st convert at the memory access. */
#ifndef VR_CUDA_ACT_CUH
#define VR_CUDA_ACT_CUH

#include <cuda_bf16.h>

typedef __nv_bfloat16 vr_bf16;

static __device__ __forceinline__ float vr_ld(const float *p) { return *p; }
static __device__ __forceinline__ float vr_ld(const vr_bf16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void vr_st(float *p, float v) { *p = v; }
/* round to nearest even, as PyTorch's autocast */
static __device__ __forceinline__ void vr_st(vr_bf16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* The channel of element i of an (N,C,S) tensor: channels last when T is bfloat16. */
template <typename T, typename I>
static __device__ __forceinline__ int vr_act_channel(I i, int c, int s)
{
    return sizeof(T) == 2 ? (int)(i % (I)c) : (int)((i / (I)s) % (I)c);
}

#endif
