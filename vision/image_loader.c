/* The image folder's training loader: worker threads filling a ring of batch buffers in step
 * order (see include/vicreg/image_loader.h).
 *
 * One mutex guards the ring, the job cursor, the epoch orders, the set's bad flags and skip
 * list; the decoding and the views run outside it. Jobs are single pairs (step, i) handed out
 * in increasing order; batch `step` lives in slot step mod depth, which is claimed by the
 * first job of the step once the consumer has given back the batch that held it before. */
#include "vicreg/image_loader.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "vicreg/rng.h"
#include "vicreg/tensor.h"

#define DOMAIN "image loader"

/* An epoch's order, shared by the slots of its steps. */
typedef struct order {
    long epoch; /* -1: unused */
    int users;  /* slots holding a step of it */
    int *perm;  /* (n) */
} order;

typedef struct slot {
    long step;     /* the batch held or being filled; -1: free */
    int done;      /* pairs finished */
    order *ord;
    float *views;  /* (2N, 3, S, S) */
    int *index;    /* (N) */
    int *labels;   /* (N) */
} slot;

typedef struct worker_arg {
    struct vr_image_loader *l;
    int id;
} worker_arg;

struct vr_image_loader {
    vr_image_folder *set;
    vr_image_views_config views;
    vr_image_loader_config c;
    long steps_per_epoch;
    size_t view_floats; /* 3 S S */
    slot slots[VR_IMAGE_LOADER_MAX_DEPTH];
    order orders[VR_IMAGE_LOADER_MAX_DEPTH];
    pthread_t *threads;
    worker_arg *args;           /* (threads) */
    vr_image_views_work **work; /* (threads) */
    int started;                /* threads running */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;     /* a slot came free, or stop */
    pthread_cond_t done_cv;     /* a batch is complete, or an error */
    long job_step;              /* the next job: pair job_pair of batch job_step */
    int job_pair;
    long next_step;             /* the batch vr_image_loader_next hands out next */
    int held;                   /* slot handed out; -1: none */
    long refills;
    int stop;
    vr_status error;            /* the first fatal failure of a worker */
    char error_msg[512];
};

long vr_image_loader_steps_per_epoch(const vr_image_loader *l) { return l->steps_per_epoch; }

/* The order of `epoch`, computed into a free entry if no slot uses it yet (under the lock; once
 * per epoch). A free entry exists: the slot being claimed is free, so at most depth - 1 slots,
 * and as many entries, are in use. */
static order *order_for(vr_image_loader *l, long epoch)
{
    order *free_entry = NULL;
    for (int k = 0; k < l->c.depth; k++) {
        if (l->orders[k].epoch == epoch) return &l->orders[k];
        if (!free_entry && l->orders[k].users == 0) free_entry = &l->orders[k];
    }
    free_entry->epoch = epoch;
    vr_rng_permutation(free_entry->perm, l->set->n, l->c.shuffle_seed, (uint64_t)epoch);
    return free_entry;
}

static void fatal(vr_image_loader *l, vr_status s, const char *msg)
{
    if (l->error == VR_OK) {
        l->error = s;
        snprintf(l->error_msg, sizeof l->error_msg, "%s", msg);
    }
    l->stop = 1;
    pthread_cond_broadcast(&l->done_cv);
    pthread_cond_broadcast(&l->work_cv);
}

/* Status of a file the set can do without (skipped) rather than a failure of the run. */
static int is_bad_file(vr_status s) { return s == VR_ERR_FORMAT || s == VR_ERR_IO || s == VR_ERR_NOT_FOUND; }

/* Pair i of slot sl (step sl->step): the first sample from its position on in the epoch's
 * order that decodes. Called without the lock; returns with it held. */
static void fill_pair(vr_image_loader *l, vr_image_views_work *w, slot *sl, int i)
{
    int n = l->set->n, nb = l->c.batch, stride = l->c.stride;
    long step = sl->step;
    /* pair i of this rank is pair offset + i of the step over all ranks */
    long p = (step % l->steps_per_epoch) * stride + l->c.offset + i;
    float *out0 = sl->views + (size_t)i * l->view_floats, *out1 = sl->views + (size_t)(nb + i) * l->view_floats;
    uint64_t index = (uint64_t)step * (uint64_t)stride + (uint64_t)(l->c.offset + i);
    for (int tries = 0; tries < n; tries++) {
        int sample = sl->ord->perm[(p + tries) % n];
        pthread_mutex_lock(&l->mu);
        int known_bad = l->set->bad[sample];
        if (tries == 1) l->refills++; /* the slot's own sample failed: one refill, whatever it takes */
        pthread_mutex_unlock(&l->mu);
        if (known_bad) continue;
        vr_status s = vr_image_views_pair_file(&l->views, w, l->set->paths[sample], l->c.views_seed, index, out0,
                                               out1, NULL);
        pthread_mutex_lock(&l->mu);
        if (s == VR_OK) {
            sl->index[i] = sample;
            sl->labels[i] = l->set->labels[sample];
            return;
        }
        char msg[512]; /* a copy: vr_fail writes over the message it would read */
        snprintf(msg, sizeof msg, "%s", vr_last_error());
        if (!is_bad_file(s)) {
            fatal(l, s, msg);
            return;
        }
        vr_status m = vr_image_folder_mark_bad(l->set, sample, msg);
        if (m != VR_OK) {
            snprintf(msg, sizeof msg, "%s", vr_last_error());
            fatal(l, m, msg);
            return;
        }
        pthread_mutex_unlock(&l->mu);
    }
    pthread_mutex_lock(&l->mu);
    char msg[512];
    snprintf(msg, sizeof msg, "%s: none of its %d images could be decoded", l->set->root, n);
    fatal(l, VR_ERR_NOT_FOUND, msg);
}

static void *worker(void *arg)
{
    vr_image_loader *l = ((worker_arg *)arg)->l;
    vr_image_views_work *w = l->work[((worker_arg *)arg)->id];
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        long step = l->job_step;
        slot *sl = &l->slots[step % l->c.depth];
        if ((l->c.end_step > 0 && step >= l->c.end_step) || (sl->step != step && sl->step != -1)) {
            pthread_cond_wait(&l->work_cv, &l->mu);
            continue;
        }
        if (sl->step == -1) {
            sl->step = step;
            sl->done = 0;
            sl->ord = order_for(l, step / l->steps_per_epoch);
            sl->ord->users++;
        }
        int i = l->job_pair;
        if (++l->job_pair == l->c.batch) {
            l->job_pair = 0;
            l->job_step++;
        }
        pthread_mutex_unlock(&l->mu);
        fill_pair(l, w, sl, i); /* returns with the lock held */
        if (l->stop) break;
        if (++sl->done == l->c.batch) pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

vr_status vr_image_loader_create(vr_image_loader **out, vr_image_folder *set, const vr_image_views_config *views,
                                 const vr_image_loader_config *c)
{
    *out = NULL;
    VR_TRY(vr_image_views_config_check(views));
    if (c->batch < 1 || c->threads < 1 || c->depth < 2 || c->depth > VR_IMAGE_LOADER_MAX_DEPTH || c->first_step < 0 ||
        (c->end_step > 0 && c->end_step <= c->first_step))
        return vr_fail(VR_ERR_ARG, DOMAIN, "%s: batch %d, %d threads, depth %d (2..%d), steps %ld..%ld", set->root,
                       c->batch, c->threads, c->depth, VR_IMAGE_LOADER_MAX_DEPTH, c->first_step, c->end_step);
    if (views->view[0].size != views->view[1].size)
        return vr_fail(VR_ERR_ARG, DOMAIN, "%s: the views' sizes differ (%d and %d); a batch holds one size",
                       set->root, views->view[0].size, views->view[1].size);
    const int stride = c->stride ? c->stride : c->batch;
    if (c->offset < 0 || c->offset + c->batch > stride)
        return vr_fail(VR_ERR_ARG, DOMAIN, "pairs [%d, %d) lie outside a step of %d", c->offset,
                       c->offset + c->batch, stride);
    if (set->n < stride)
        return vr_fail(VR_ERR_ARG, DOMAIN, "%s: %d images, fewer than a batch of %d", set->root, set->n, stride);
    vr_image_loader *l = calloc(1, sizeof *l);
    if (!l) return vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot allocate the loader", set->root);
    l->set = set;
    l->views = *views;
    l->c = *c;
    l->c.stride = stride;
    l->steps_per_epoch = set->n / stride;
    int size = views->view[0].size;
    l->view_floats = (size_t)3 * size * size;
    l->job_step = l->next_step = c->first_step;
    l->held = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    vr_status s = VR_OK;
    for (int k = 0; k < c->depth && s == VR_OK; k++) {
        slot *sl = &l->slots[k];
        sl->step = -1;
        l->orders[k].epoch = -1;
        sl->views = vr_alloc(2 * (size_t)c->batch * l->view_floats * sizeof(float));
        sl->index = vr_alloc((size_t)c->batch * sizeof(int));
        sl->labels = vr_alloc((size_t)c->batch * sizeof(int));
        l->orders[k].perm = vr_alloc((size_t)set->n * sizeof(int));
        if (!sl->views || !sl->index || !sl->labels || !l->orders[k].perm)
            s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot allocate %d batches of %d pairs of %dx%d views", set->root,
                        c->depth, c->batch, size, size);
    }
    l->threads = calloc((size_t)c->threads, sizeof *l->threads);
    l->work = calloc((size_t)c->threads, sizeof *l->work);
    l->args = calloc((size_t)c->threads, sizeof *l->args);
    if (s == VR_OK && (!l->threads || !l->work || !l->args))
        s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot allocate %d workers", set->root, c->threads);
    for (int t = 0; t < c->threads && s == VR_OK; t++) s = vr_image_views_work_create(&l->work[t]);
    for (int t = 0; t < c->threads && s == VR_OK; t++) {
        l->args[t] = (worker_arg){l, t};
        if (pthread_create(&l->threads[t], NULL, worker, &l->args[t]) != 0)
            s = vr_fail(VR_ERR_NOMEM, DOMAIN, "%s: cannot start worker thread %d", set->root, t + 1);
        else l->started++;
    }
    if (s != VR_OK) {
        vr_image_loader_free(l);
        return s;
    }
    *out = l;
    return VR_OK;
}

vr_status vr_image_loader_next(vr_image_loader *l, vr_image_batch *b)
{
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) {
        slot *old = &l->slots[l->held];
        old->step = -1;
        old->ord->users--;
        l->held = -1;
        pthread_cond_broadcast(&l->work_cv);
    }
    long step = l->next_step;
    slot *sl = &l->slots[step % l->c.depth];
    if (l->c.end_step > 0 && step >= l->c.end_step) {
        pthread_mutex_unlock(&l->mu);
        return vr_fail(VR_ERR_ARG, DOMAIN, "%s: batch %ld asked for past the last one, %ld", l->set->root, step,
                       l->c.end_step - 1);
    }
    while (l->error == VR_OK && !(sl->step == step && sl->done == l->c.batch)) pthread_cond_wait(&l->done_cv, &l->mu);
    if (l->error != VR_OK) {
        vr_status s = vr_fail(l->error, DOMAIN, "%s", l->error_msg);
        pthread_mutex_unlock(&l->mu);
        return s;
    }
    l->held = (int)(step % l->c.depth);
    l->next_step++;
    pthread_mutex_unlock(&l->mu);
    *b = (vr_image_batch){.step = step, .n = l->c.batch, .views = sl->views, .index = sl->index,
                          .labels = sl->labels};
    return VR_OK;
}

int vr_image_loader_skip_reason(vr_image_loader *l, int i, char *buf, size_t len)
{
    pthread_mutex_lock(&l->mu);
    int have = i >= 0 && i < l->set->nskipped;
    if (have) snprintf(buf, len, "%s", l->set->skipped[i].reason);
    pthread_mutex_unlock(&l->mu);
    return have;
}

long vr_image_loader_refills(vr_image_loader *l)
{
    pthread_mutex_lock(&l->mu);
    long r = l->refills;
    pthread_mutex_unlock(&l->mu);
    return r;
}

void vr_image_loader_free(vr_image_loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->started; t++) pthread_join(l->threads[t], NULL);
    for (int t = 0; l->work && t < l->c.threads; t++) vr_image_views_work_free(l->work[t]);
    for (int k = 0; k < l->c.depth; k++) {
        vr_free(l->slots[k].views);
        vr_free(l->slots[k].index);
        vr_free(l->slots[k].labels);
        vr_free(l->orders[k].perm);
    }
    free(l->threads);
    free(l->work);
    free(l->args);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->done_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
