/* Data-parallel training over MPI, run as `mpirun -np 2 test_dist` (tests/meson.build).
 *
 * Every rank holds half of a global batch; the run must equal one process holding all of it:
 * a small ResNet-18 + expander (the image setup: one branch for both views) and two small
 * non-shared 1-D and 2-D branches (the audio setup), 3 LARS steps, with the loss gathered over
 * the ranks and SyncBN, compared with the single-process trainer that each rank also runs on the
 * whole batch, the gradients summed in small buckets started during the backward. Losses
 * and every parameter and buffer agree within |d| <= 1e-4 * (|ref| + rms(tensor)) (the
 * statistics and sums are taken in another order); without the gather or without SyncBN the
 * run is measurably different. The collectives themselves are checked against known sums, and
 * a rank that does not come is reported within the comm's timeout. */
#include <math.h>
#include <unistd.h>

#include "testutil.h"
#include "vicreg/comm.h"
#include "vicreg/trainer.h"

static vr_comm *comm;

#define B 8     /* global pairs per step */
#define HW 16
#define STEPS 3
#define LR 0.2f

#define LEN 512 /* samples of the audio setup's waveforms */

/* one run: a model, its trainer, and the losses of its steps */
typedef struct run {
    int audio;   /* 0: the image setup (one shared branch); 1: the audio setup's two branches */
    vr_backend *be;
    vr_model m;
    vr_trainer t;
    vr_vicreg_terms terms[STEPS];
} run;

/* Floats per sample of branch b's input: an image view (3,HW,HW); a waveform (1,1,LEN) or a
 * spectrogram (1,HW,HW). */
static size_t sample_floats(const run *r, int b)
{
    return r->audio ? (b ? (size_t)HW * HW : LEN) : (size_t)3 * HW * HW;
}

static void run_open(run *r, int n, int audio)
{
    r->audio = audio;
    TU_OK(vr_cpu_backend_create(1, &r->be));
    vr_branch_config bc[2];
    int widths[4] = {8, 16, 16, 32};
    if (audio) {
        vr_branch_config_wave(&bc[0], "64-64");
        vr_branch_config_spec(&bc[1], "64-64");
        for (int b = 0; b < 2; b++) memcpy(bc[b].encoder.widths, widths, sizeof widths);
        bc[0].encoder.stem_kernel = 9, bc[0].encoder.stem_pad = 4;
        snprintf(bc[0].expander, sizeof bc[0].expander, "32-64-64");
        snprintf(bc[1].expander, sizeof bc[1].expander, "32-64-64");
    } else {
        vr_branch_config_image(&bc[0], 18, "");
        memcpy(bc[0].encoder.widths, widths, sizeof widths);
        strcpy(bc[0].expander, "32-64-64");
    }
    TU_OK(vr_model_create(&r->m, r->be, audio ? 2 : 1, bc));
    TU_OK(vr_model_init(&r->m, 7));
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_LARS);
    int h[2] = {audio ? 1 : HW, HW}, w[2] = {audio ? LEN : HW, HW};
    TU_OK(vr_trainer_create(&r->t, &r->m, &oc, n, h, w));
}

static void run_close(run *r)
{
    vr_trainer_free(&r->t);
    vr_model_free(&r->m);
    vr_backend_destroy(r->be);
}

/* STEPS steps of r on its share of the global batches (the whole of them when n == B). The
 * global input of a step, per branch: the image setup's (2B,3,HW,HW), view 1 rows then view 2
 * rows; the audio setup's (B,1,1,LEN) and (B,1,HW,HW). A rank's share is rows
 * [rank*n, (rank+1)*n) of each view or branch. */
static void run_steps(run *r, int rank, int n)
{
    const int nb = r->audio ? 2 : 1, views = r->audio ? 1 : 2;
    float *x[2], *mine[2];
    for (int b = 0; b < nb; b++) {
        x[b] = malloc((size_t)views * B * sample_floats(r, b) * sizeof(float));
        mine[b] = malloc((size_t)views * n * sample_floats(r, b) * sizeof(float));
        CU_ASSERT_PTR_NOT_NULL_FATAL(x[b]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(mine[b]);
    }
    for (int s = 0; s < STEPS; s++) {
        vr_rng g;
        vr_rng_seed(&g, 99 + (uint64_t)s);
        for (int b = 0; b < nb; b++) {
            size_t row = sample_floats(r, b);
            tu_fill_normal(x[b], (size_t)views * B * row, &g, 1.0f);
            for (int v = 0; v < views; v++)
                memcpy(mine[b] + (size_t)v * n * row, x[b] + ((size_t)v * B + (size_t)rank * n) * row,
                       (size_t)n * row * sizeof(float));
        }
        const float *in[2] = {mine[0], mine[nb - 1]};
        TU_OK(vr_trainer_step(&r->t, in, LR, &r->terms[s]));
    }
    for (int b = 0; b < nb; b++) {
        free(x[b]);
        free(mine[b]);
    }
}

/* Tensor by tensor: |got - ref| <= 1e-4 * (|ref| + rms(ref)), rtol 1e-4 of the element or of
 * its tensor's scale (an element that is a small difference of large sums, as a BatchNorm bias
 * after 3 steps, carries the rounding of those sums); returns the failures. */
static int compare_set(const vr_paramset *set, const float *got, const float *ref, const char *kind)
{
    int bad = 0;
    for (int i = 0; i < set->count; i++) {
        const vr_param *p = &set->items[i];
        double ss = 0.0;
        for (size_t j = 0; j < p->count; j++) ss += (double)ref[p->offset + j] * ref[p->offset + j];
        double rms = sqrt(ss / (double)p->count);
        char what[160];
        snprintf(what, sizeof what, "rank %d %s %s", comm->rank, kind, p->name);
        if (!tu_close(got + p->offset, ref + p->offset, p->count, 1e-4 * rms, 1e-4, what)) bad++;
    }
    return bad;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

/* The largest relative difference of the parameters, for the "differs" checks. */
static double max_param_diff(const run *a, const run *b)
{
    double worst = 0.0;
    for (size_t j = 0; j < a->m.params.total; j++) {
        double d = fabs((double)a->m.p[j] - b->m.p[j]) / (fabs((double)b->m.p[j]) + 1e-3);
        if (d > worst) worst = d;
    }
    return worst;
}

/* The single-process reference on the whole global batch. */
static void reference(run *ref, int audio)
{
    run_open(ref, B, audio);
    run_steps(ref, 0, B);
}

/* bucket: floats per bucket of the gradient sum; 0: the trainer's own */
static void distributed(run *r, int audio, int gather, int sync_bn, size_t bucket)
{
    run_open(r, B / comm->size, audio);
    TU_OK(vr_trainer_distribute(&r->t, comm, gather, sync_bn));
    if (bucket) r->t.bucket = bucket;
    TU_OK(vr_trainer_broadcast(&r->t));
    run_steps(r, comm->rank, B / comm->size);
}

static void equals_one_process(int audio)
{
    CU_ASSERT_EQUAL_FATAL(comm->size, 2);
    run ref, r;
    reference(&ref, audio);
    /* buckets of 1000 floats, cut through tensors: most of them start during the backward */
    distributed(&r, audio, 1, 1, 1000);
    fprintf(stderr, "\n  rank %d: %d gradient buckets, %d started during the backward\n",
            comm->rank, r.t.buckets, r.t.buckets_overlapped);
    CU_ASSERT(r.t.buckets_overlapped > r.t.buckets / 2);
    CU_ASSERT(r.t.buckets_overlapped < r.t.buckets);
    for (int s = 0; s < STEPS; s++) {
        const double got[4] = {r.terms[s].loss, r.terms[s].invariance, r.terms[s].variance,
                               r.terms[s].covariance};
        const double want[4] = {ref.terms[s].loss, ref.terms[s].invariance, ref.terms[s].variance,
                                ref.terms[s].covariance};
        for (int k = 0; k < 4; k++) {
            if (rel(got[k], want[k]) > 1e-4)
                fprintf(stderr, "\n  rank %d step %d term %d: %.9g vs %.9g\n", comm->rank, s + 1, k,
                        got[k], want[k]);
            CU_ASSERT(rel(got[k], want[k]) <= 1e-4);
        }
    }
    CU_ASSERT_EQUAL(compare_set(&r.m.params, r.m.p, ref.m.p, "parameter"), 0);
    CU_ASSERT_EQUAL(compare_set(&r.m.buffers, r.m.buf, ref.m.buf, "buffer"), 0);
    fprintf(stderr, "\n  rank %d: loss after %d steps %.6f (one process %.6f); largest parameter "
            "difference %.3g (relative)\n", comm->rank, STEPS, r.terms[STEPS - 1].loss,
            ref.terms[STEPS - 1].loss, max_param_diff(&r, &ref));
    /* every rank took the same steps: its parameters are bit for bit rank 0's */
    size_t bytes = r.m.params.total * sizeof(float);
    float *zero = malloc(bytes);
    CU_ASSERT_PTR_NOT_NULL_FATAL(zero);
    memcpy(zero, r.m.p, bytes);
    TU_OK(vr_comm_broadcast(comm, zero, r.m.params.total, VR_COMM_F32, 0));
    CU_ASSERT(memcmp(zero, r.m.p, bytes) == 0);
    free(zero);
    run_close(&r);
    run_close(&ref);
}

static void test_equals_one_process(void) { equals_one_process(0); }

/* The audio setup: two non-shared branches (1-D waveform and 2-D spectrogram ResNets), each
 * with its own expander and batch norms. */
static void test_equals_one_process_audio(void) { equals_one_process(1); }

/* Without the gather each rank's variance and covariance are of its own 4 pairs: another
 * loss; without SyncBN other statistics: other parameters. */
static void test_gather_and_syncbn_matter(void)
{
    run ref, r;
    reference(&ref, 0);
    distributed(&r, 0, 0, 1, 0);
    double d = rel(r.terms[0].loss, ref.terms[0].loss);
    fprintf(stderr, "\n  rank %d: loss of step 1 without the gather %.6f, with %.6f (relative "
            "difference %.3g)\n", comm->rank, r.terms[0].loss, ref.terms[0].loss, d);
    CU_ASSERT(d > 1e-3);
    CU_ASSERT(isfinite(r.terms[0].loss));
    run_close(&r);
    distributed(&r, 0, 1, 0, 0);
    double p = max_param_diff(&r, &ref);
    fprintf(stderr, "  rank %d: without SyncBN the parameters after %d steps differ by %.3g "
            "(relative)\n", comm->rank, STEPS, p);
    CU_ASSERT(p > 1e-2);
    run_close(&r);
    run_close(&ref);
}

/* Rank 1 starts from other weights; after the broadcast every rank holds rank 0's. */
static void test_broadcast_state(void)
{
    run r;
    run_open(&r, 4, 0);
    TU_OK(vr_trainer_distribute(&r.t, comm, 1, 1));
    if (comm->rank == 1) {
        TU_OK(vr_model_init(&r.m, 12345));
        r.t.step = 77;
    }
    TU_OK(vr_trainer_broadcast(&r.t));
    run ref;
    run_open(&ref, 4, 0);
    CU_ASSERT(memcmp(r.m.p, ref.m.p, r.m.params.total * sizeof(float)) == 0);
    CU_ASSERT_EQUAL(r.t.step, 0);
    run_close(&ref);
    run_close(&r);
}

static void test_collectives(void)
{
    const int rank = comm->rank, size = comm->size;
    double d[3] = {rank + 0.5, -rank, 1e300};
    TU_OK(vr_comm_allreduce(comm, d, 2, VR_COMM_F64));
    CU_ASSERT_DOUBLE_EQUAL(d[0], size * 0.5 + size * (size - 1) / 2.0, 0.0);
    CU_ASSERT_DOUBLE_EQUAL(d[1], -size * (size - 1) / 2.0, 0.0);
    CU_ASSERT_EQUAL(d[2], 1e300); /* past count: untouched */
    int64_t mine[2] = {rank, 10 * rank}, all[2 * 4];
    TU_OK(vr_comm_allgather(comm, mine, 2, VR_COMM_I64, all));
    for (int r = 0; r < size; r++) {
        CU_ASSERT_EQUAL(all[2 * r], r);
        CU_ASSERT_EQUAL(all[2 * r + 1], 10 * r);
    }
    char text[32];
    snprintf(text, sizeof text, "from rank %d", rank);
    TU_OK(vr_comm_broadcast(comm, text, sizeof text, VR_COMM_U8, size - 1));
    char want[32];
    snprintf(want, sizeof want, "from rank %d", size - 1);
    CU_ASSERT_STRING_EQUAL(text, want);
    /* float data on a CPU backend goes through the host collectives */
    vr_backend *be;
    TU_OK(vr_cpu_backend_create(1, &be));
    float f[3] = {1.0f, 2.0f, (float)rank}, g[6];
    TU_OK(vr_comm_allreduce_dev(comm, be, f, 3));
    CU_ASSERT_EQUAL(f[0], (float)size);
    CU_ASSERT_EQUAL(f[2], (float)(size * (size - 1) / 2));
    float h[3] = {(float)rank, 0, 0};
    TU_OK(vr_comm_allgather_dev(comm, be, h, 3, g));
    CU_ASSERT_EQUAL(g[3], 1.0f);
    /* sums that overlap other work: started, progressed, finished together */
    float parts[3][5];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 5; i++) parts[k][i] = (float)(rank * 10 + k + i);
    for (int k = 0; k < 3; k++) TU_OK(vr_comm_sum_start(comm, be, parts[k], 5));
    TU_OK(vr_comm_sum_progress(comm, be));
    TU_OK(vr_comm_sum_finish(comm, be));
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 5; i++)
            CU_ASSERT_EQUAL(parts[k][i], (float)(10 * size * (size - 1) / 2 + size * (k + i)));
    TU_OK(vr_comm_barrier(comm));
    vr_backend_destroy(be);
}

/* Rank 1 comes 3 s late to a barrier; rank 0, with a timeout of 1 s, gives up with a message
 * naming itself, the operation and the timeout. (Both then meet at a second barrier, which
 * rank 1's late arrival and the abandoned request complete in MPI's order.) */
static void test_timeout(void)
{
    double saved = comm->timeout_s;
    if (comm->rank == 1) {
        sleep(3);
        TU_OK(vr_comm_barrier(comm));
    } else {
        comm->timeout_s = 1.0;
        vr_status s = vr_comm_barrier(comm);
        CU_ASSERT_EQUAL(s, VR_ERR_COMM);
        CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "rank 0 of 2"));
        CU_ASSERT_PTR_NOT_NULL(strstr(vr_last_error(), "did not complete within 1 s"));
        fprintf(stderr, "\n  %s\n", vr_last_error());
        comm->timeout_s = saved;
    }
    TU_OK(vr_comm_barrier(comm));
}

int main(void)
{
    if (vr_comm_create("mpi", NULL, &comm) != VR_OK) {
        fprintf(stderr, "test_dist: %s\n", vr_last_error());
        return 2;
    }
    comm->timeout_s = 120;
    static const tu_test tests[] = {
        {"collectives", test_collectives},
        {"2 ranks with B/2 equal 1 process with B: 3 LARS steps, gather + SyncBN",
         test_equals_one_process},
        {"the same for the audio setup's two non-shared branches", test_equals_one_process_audio},
        {"the loss differs without the gather, the parameters without SyncBN",
         test_gather_and_syncbn_matter},
        {"every rank starts from rank 0's state", test_broadcast_state},
        {"a late rank: the wait ends at the timeout", test_timeout},
        {NULL, NULL},
    };
    char name[32];
    snprintf(name, sizeof name, "dist rank %d", comm->rank);
    int rc = tu_main(name, tests); /* mpirun fails when any rank does */
    vr_comm_destroy(comm);
    return rc;
}
