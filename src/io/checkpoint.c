/* Checkpoint files over safetensors. */
#include "vicreg/checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/safetensors.h"

#define VR_CHECKPOINT_FORMAT "vicreg-checkpoint-1"

static const char *slot_name(const vr_optim *o, int i)
{
    if (o->cfg.kind == VR_OPTIM_ADAMW) return i ? "exp_avg_sq" : "exp_avg";
    return "momentum_buffer";
}

/* A host view of a device block: the block itself on the CPU, else a downloaded copy. */
static vr_status host_view(vr_backend *be, const float *dev, size_t count, float **host)
{
    if (be->device == VR_DEVICE_CPU) {
        *host = (float *)dev;
        return VR_OK;
    }
    *host = vr_alloc(count * sizeof(float));
    if (!*host) return vr_fail(VR_ERR_NOMEM, "checkpoint", "cannot stage %zu floats", count);
    return be->download(be, *host, dev, count);
}

static void host_release(vr_backend *be, float *host)
{
    if (be->device != VR_DEVICE_CPU) vr_free(host);
}

static vr_status add_set(vr_st_writer *w, const vr_paramset *ps, const float *base,
                         const char *prefix)
{
    char name[2 * VR_NAME_MAX];
    for (int i = 0; i < ps->count; i++) {
        const vr_param *t = &ps->items[i];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        VR_TRY(vr_st_add(w, name, VR_DTYPE_F32, t->ndim, t->shape, base + t->offset));
    }
    return VR_OK;
}

/* A checkpoint is the run's fallback, so one that holds a NaN or an Inf is refused: the first
 * tensor of ps (values at base) with such values is named with their count. */
static vr_status check_finite(const vr_paramset *ps, const float *base, const char *path, const vr_run_state *run)
{
    for (int i = 0; i < ps->count; i++) {
        const vr_param *t = &ps->items[i];
        size_t bad = 0;
        for (size_t j = 0; j < t->count; j++) bad += !isfinite(base[t->offset + j]);
        if (bad)
            return vr_fail(VR_ERR_NUMERIC, "checkpoint",
                           "%s not written: %zu of the %zu values of %s are not finite (after step %ld); "
                           "the file there is left as it was",
                           path, bad, t->count, t->name, run ? run->step : -1L);
    }
    return VR_OK;
}

vr_status vr_checkpoint_save(const char *path, const vr_model *m, const vr_optim *optim,
                             const vr_run_state *run, const char *recipe)
{
    vr_backend *be = m->be;
    vr_st_writer *w = NULL;
    float *hp = NULL, *hb = NULL, *hs[2] = {NULL, NULL};
    char text[128], key[64];
    vr_status s = vr_st_writer_new(&w);
    if (s == VR_OK) s = host_view(be, m->p, m->params.total, &hp);
    if (s == VR_OK) s = host_view(be, m->buf, m->buffers.total, &hb);
    if (s == VR_OK) s = check_finite(&m->params, hp, path, run);
    if (s == VR_OK) s = check_finite(&m->buffers, hb, path, run);
    if (s == VR_OK) s = add_set(w, &m->params, hp, "");
    if (s == VR_OK) s = add_set(w, &m->buffers, hb, "");
    for (int i = 0; s == VR_OK && i < m->counts.count; i++)
        s = vr_st_add(w, m->counts.names[i], VR_DTYPE_I64, 0, NULL, &m->counts.values[i]);
    if (s == VR_OK) s = vr_st_add_metadata(w, "format", VR_CHECKPOINT_FORMAT);
    if (s == VR_OK && recipe) s = vr_st_add_metadata(w, "recipe", recipe);
    if (optim) {
        for (int i = 0; s == VR_OK && i < optim->nstate; i++) {
            s = host_view(be, optim->state[i], m->params.total, &hs[i]);
            snprintf(key, sizeof key, "optimizer.%s.", slot_name(optim, i));
            if (s == VR_OK) s = add_set(w, &m->params, hs[i], key);
        }
        snprintf(text, sizeof text, "%ld", optim->step);
        if (s == VR_OK) s = vr_st_add_metadata(w, "optimizer", vr_optim_kind_name(optim->cfg.kind));
        if (s == VR_OK) s = vr_st_add_metadata(w, "optimizer_step", text);
    }
    if (run) {
        snprintf(text, sizeof text, "%ld", run->step);
        if (s == VR_OK) s = vr_st_add_metadata(w, "step", text);
        snprintf(text, sizeof text, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
                 run->rng.s[0], run->rng.s[1], run->rng.s[2], run->rng.s[3]);
        if (s == VR_OK) s = vr_st_add_metadata(w, "rng", text);
    }
    if (s == VR_OK) s = vr_st_write(w, path);
    vr_st_writer_free(w);
    host_release(be, hp);
    host_release(be, hb);
    for (int i = 0; i < 2; i++) host_release(be, hs[i]);
    return s;
}

/* Reads every tensor of ps into its place in host; the alignment gaps are zeroed so a loaded
 * block equals the saved one bit for bit. */
static vr_status read_set(const vr_safetensors *st, const char *path, const vr_paramset *ps,
                          float *host, const char *prefix)
{
    char name[2 * VR_NAME_MAX];
    memset(host, 0, ps->total * sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        const vr_param *t = &ps->items[i];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        if (!vr_st_find(st, name))
            return vr_fail(VR_ERR_NOT_FOUND, "checkpoint", "%s: no tensor '%s'", path, name);
        VR_TRY(vr_st_read_f32(st, name, t->ndim, t->shape, host + t->offset));
    }
    return VR_OK;
}

static vr_status parse_long(const char *path, const char *key, const char *text, long *out)
{
    char *end;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || end == text || *end || v < 0)
        return vr_fail(VR_ERR_FORMAT, "checkpoint", "%s: metadata '%s' is %s%s%s", path, key,
                       text ? "'" : "missing", text ? text : "", text ? "', not a step" : "");
    *out = v;
    return VR_OK;
}

static vr_status load_run(const vr_safetensors *st, const char *path, vr_run_state *run)
{
    VR_TRY(parse_long(path, "step", vr_st_metadata(st, "step"), &run->step));
    const char *r = vr_st_metadata(st, "rng");
    if (!r || strlen(r) != 64)
        return vr_fail(VR_ERR_FORMAT, "checkpoint", "%s: metadata 'rng' missing or not 64 hex digits", path);
    for (int i = 0; i < 4; i++) {
        char word[17];
        memcpy(word, r + 16 * i, 16);
        word[16] = '\0';
        char *end;
        run->rng.s[i] = strtoull(word, &end, 16);
        if (*end) return vr_fail(VR_ERR_FORMAT, "checkpoint", "%s: metadata 'rng' is not hex", path);
    }
    return VR_OK;
}

static vr_status load_all(const vr_safetensors *st, const char *path, vr_model *m,
                          vr_optim *optim, vr_run_state *run, float *host)
{
    vr_backend *be = m->be;
    const char *format = vr_st_metadata(st, "format");
    if (!format || strcmp(format, VR_CHECKPOINT_FORMAT) != 0) {
        /* weights exported from PyTorch carry no format tag; they can still be read */
        if (optim || run)
            return vr_fail(VR_ERR_FORMAT, "checkpoint", "%s: not a training checkpoint (format '%s')",
                           path, format ? format : "none");
    }
    VR_TRY(read_set(st, path, &m->params, host, ""));
    VR_TRY(be->upload(be, m->p, host, m->params.total));
    VR_TRY(read_set(st, path, &m->buffers, host, ""));
    VR_TRY(be->upload(be, m->buf, host, m->buffers.total));
    for (int i = 0; i < m->counts.count; i++) {
        m->counts.values[i] = 0;
        if (vr_st_find(st, m->counts.names[i]))
            VR_TRY(vr_st_read(st, m->counts.names[i], VR_DTYPE_I64, &m->counts.values[i], 1));
    }
    if (optim) {
        const char *kind = vr_st_metadata(st, "optimizer");
        if (!kind || strcmp(kind, vr_optim_kind_name(optim->cfg.kind)) != 0)
            return vr_fail(VR_ERR_FORMAT, "checkpoint", "%s: optimizer state is '%s', the run uses '%s'",
                           path, kind ? kind : "missing", vr_optim_kind_name(optim->cfg.kind));
        char key[64];
        for (int i = 0; i < optim->nstate; i++) {
            snprintf(key, sizeof key, "optimizer.%s.", slot_name(optim, i));
            VR_TRY(read_set(st, path, &m->params, host, key));
            VR_TRY(be->upload(be, optim->state[i], host, m->params.total));
        }
        VR_TRY(parse_long(path, "optimizer_step", vr_st_metadata(st, "optimizer_step"), &optim->step));
    }
    if (run) VR_TRY(load_run(st, path, run));
    return VR_OK;
}

vr_status vr_checkpoint_load(const char *path, vr_model *m, vr_optim *optim, vr_run_state *run)
{
    vr_safetensors *st;
    VR_TRY(vr_st_open(path, &st));
    size_t count = m->params.total > m->buffers.total ? m->params.total : m->buffers.total;
    float *host = vr_alloc((count + 1) * sizeof(float));
    vr_status s = host ? load_all(st, path, m, optim, run, host)
                       : vr_fail(VR_ERR_NOMEM, "checkpoint", "cannot stage %zu floats", count);
    vr_free(host);
    vr_st_close(st);
    return s;
}

vr_status vr_checkpoint_load_weights(const vr_safetensors *st, const char *path, vr_model *m)
{
    size_t count = m->params.total > m->buffers.total ? m->params.total : m->buffers.total;
    float *host = vr_alloc((count + 1) * sizeof(float));
    vr_status s = host ? load_all(st, path, m, NULL, NULL, host)
                       : vr_fail(VR_ERR_NOMEM, "checkpoint", "cannot stage %zu floats", count);
    vr_free(host);
    return s;
}
