/* Named parameter layouts and BatchNorm counters. */
#include "vicreg/params.h"

#include <stdlib.h>
#include <string.h>

#define VR_PARAM_ALIGN 16 /* floats: every view starts on a 64-byte boundary */

vr_status vr_paramset_add(vr_paramset *ps, const char *name, int ndim, const int64_t *shape,
                          size_t *offset)
{
    VR_ASSERT(ndim >= 1 && ndim <= 4 && strlen(name) < VR_NAME_MAX);
    VR_ASSERT(vr_paramset_find(ps, name) == NULL);
    if (ps->count == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 64;
        vr_param *items = realloc(ps->items, (size_t)cap * sizeof *items);
        if (!items) return vr_fail(VR_ERR_NOMEM, "params", "cannot declare '%s'", name);
        ps->items = items;
        ps->cap = cap;
    }
    vr_param *p = &ps->items[ps->count++];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->offset = ps->total;
    ps->total += (p->count + VR_PARAM_ALIGN - 1) / VR_PARAM_ALIGN * VR_PARAM_ALIGN;
    *offset = p->offset;
    return VR_OK;
}

const vr_param *vr_paramset_find(const vr_paramset *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->items[i].name, name) == 0) return &ps->items[i];
    return NULL;
}

void vr_paramset_free(vr_paramset *ps)
{
    free(ps->items);
    memset(ps, 0, sizeof *ps);
}

vr_status vr_counters_add(vr_counters *c, const char *name, int *index)
{
    VR_ASSERT(strlen(name) < VR_NAME_MAX);
    if (c->count == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        char(*names)[VR_NAME_MAX] = realloc(c->names, (size_t)cap * sizeof *names);
        if (names) c->names = names;
        int64_t *values = realloc(c->values, (size_t)cap * sizeof *values);
        if (values) c->values = values;
        if (!names || !values) return vr_fail(VR_ERR_NOMEM, "params", "cannot declare '%s'", name);
        c->cap = cap;
    }
    strcpy(c->names[c->count], name);
    c->values[c->count] = 0;
    *index = c->count++;
    return VR_OK;
}

void vr_counters_free(vr_counters *c)
{
    free(c->names);
    free(c->values);
    memset(c, 0, sizeof *c);
}
