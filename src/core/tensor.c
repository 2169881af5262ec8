/* Tensor views and the bump arena. */
#include "vicreg/tensor.h"

#include <stdio.h>
#include <string.h>

#define VR_ALIGN 64

int64_t vr_tensor_numel(const vr_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

vr_tensor vr_tensor_view(float *data, vr_device dev, int ndim, const int64_t *shape)
{
    VR_ASSERT(ndim >= 0 && ndim <= VR_MAX_DIMS);
    vr_tensor t = {.data = data, .ndim = ndim, .device = dev};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

const char *vr_shape_str(const vr_tensor *t, char *buf, size_t len)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, len - n, "[");
    for (int i = 0; i < t->ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
    return buf;
}

void *vr_alloc(size_t bytes)
{
    size_t rounded = (bytes + VR_ALIGN - 1) / VR_ALIGN * VR_ALIGN;
    if (rounded == 0) rounded = VR_ALIGN;
    void *p = aligned_alloc(VR_ALIGN, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void vr_free(void *p) { free(p); }

vr_status vr_arena_init(vr_arena *a, size_t bytes)
{
    a->base = vr_alloc(bytes); /* zeroing touches every page once */
    a->capacity = a->base ? (bytes + VR_ALIGN - 1) / VR_ALIGN * VR_ALIGN : 0;
    a->used = 0;
    if (!a->base)
        return vr_fail(VR_ERR_NOMEM, "arena", "cannot allocate %zu bytes", bytes);
    return VR_OK;
}

vr_status vr_arena_take(vr_arena *a, size_t bytes, void **out)
{
    size_t rounded = (bytes + VR_ALIGN - 1) / VR_ALIGN * VR_ALIGN;
    if (rounded > a->capacity - a->used) {
        *out = NULL;
        return vr_fail(VR_ERR_NOMEM, "arena", "request of %zu bytes exceeds the %zu left of %zu",
                       bytes, a->capacity - a->used, a->capacity);
    }
    *out = a->base + a->used;
    a->used += rounded;
    return VR_OK;
}

void vr_arena_reset(vr_arena *a) { a->used = 0; }

void vr_arena_free(vr_arena *a)
{
    vr_free(a->base);
    a->base = NULL;
    a->capacity = a->used = 0;
}
