/* The optimiser driver: one backend update per parameter tensor, with the 1-D group rule. */
#include "vicreg/optim.h"

#include <string.h>

void vr_optim_config_default(vr_optim_config *c, vr_optim_kind kind)
{
    *c = (vr_optim_config){.kind = kind, .weight_decay = 1e-6f, .momentum = 0.9f, .eta = 0.001f,
                           .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .exclude_1d = 1};
    if (kind == VR_OPTIM_ADAMW) c->weight_decay = 0.05f;
}

static const char *const kind_names[] = {"lars", "sgd", "adamw"};

const char *vr_optim_kind_name(vr_optim_kind kind) { return kind_names[kind]; }

vr_status vr_optim_kind_parse(const char *name, vr_optim_kind *kind)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, kind_names[i]) == 0) {
            *kind = (vr_optim_kind)i;
            return VR_OK;
        }
    return vr_fail(VR_ERR_ARG, "optimizer", "unknown optimizer '%s' (lars, sgd, adamw)", name);
}

vr_status vr_optim_create(vr_optim *o, const vr_optim_config *cfg, vr_backend *be,
                          const vr_paramset *params)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = be;
    o->params = params;
    o->nstate = cfg->kind == VR_OPTIM_ADAMW ? 2 : 1;
    for (int i = 0; i < o->nstate; i++) {
        VR_TRY(be->alloc(be, params->total * sizeof(float), &o->state[i]));
        VR_TRY(be->fill(be, params->total, 0.0f, o->state[i]));
    }
    return VR_OK;
}

vr_status vr_optim_step(vr_optim *o, float *p, const float *g, float lr)
{
    vr_backend *be = o->be;
    const vr_optim_config *c = &o->cfg;
    for (int i = 0; i < o->params->count; i++) {
        const vr_param *t = &o->params->items[i];
        int grouped = c->exclude_1d && t->ndim == 1;
        float wd = grouped ? 0.0f : c->weight_decay;
        float *w = p + t->offset, *s0 = o->state[0] + t->offset;
        const float *gt = g + t->offset;
        switch (c->kind) {
        case VR_OPTIM_LARS:
            VR_TRY(be->lars_step(be, t->count, w, gt, s0, lr, wd, c->momentum, c->eta, !grouped));
            break;
        case VR_OPTIM_SGD:
            VR_TRY(be->sgd_step(be, t->count, w, gt, s0, lr, wd, c->momentum, o->step == 0));
            break;
        case VR_OPTIM_ADAMW:
            VR_TRY(be->adamw_step(be, t->count, w, gt, s0, o->state[1] + t->offset, lr, c->beta1,
                                  c->beta2, c->eps, wd, o->step + 1));
            break;
        }
    }
    o->step++;
    return VR_OK;
}

void vr_optim_free(vr_optim *o)
{
    for (int i = 0; i < o->nstate; i++)
        if (o->state[i]) o->be->free(o->be, o->state[i]);
    memset(o, 0, sizeof *o);
}
