/* Training-step benchmark: the steps of configs a and b of shared/bench/torch_peer.py, on random
 * data, printing the median step time, pairs/s, GFLOP/s and peak RSS as one RESULT line of JSON
 * (the peer's fields), so tests/bench/compare.sh can put the two side by side.
 *
 *   a  ResNet-18, two 64x64 views, batch 64, expander 512-2048-2048-2048
 *   b  ResNet-50, two 224x224 views, batch 8, expander 2048-8192-8192-8192
 *   c  audio: 1-D ResNet-18 (48..384) on 1 s of 16 kHz waveform and ResNet-18 (1-channel stem)
 *      on its 64x101 log-mel in [0, 1], non-shared, expanders 2048-2048-2048, batch 64; the
 *      log-mel is computed inside the timed step, as the peer does
 *   gpu ResNet-50, two 224x224 views, --batch pairs (64), expander 2048-8192-8192-8192, on the
 *      --backend cuda, cuda-tf32 or cuda-bf16 (see tests/bench/gpu_bench.sh and its peer,
 *      tests/bench/torch_gpu_peer.py); one batch uploaded once and reused, every step waited
 *      for; the RESULT line adds the device memory the run took (cudaMemGetInfo after the steps
 *      against before the backend, once the CUDA context exists: handles, lazily loaded
 *      kernels, workspaces and the caching of every kind count, as the peer measures); each
 *      timed step is an NVTX range "step", which a profiler can select (gpu_bench.sh PROFILE)
 * Optimiser as the peer: SGD momentum 0.9, weight decay 1e-6 on every tensor (lr 0.01; 1e-3 for
 * b and gpu).
 *
 * usage: bench_step a|b|c [--threads N] [--warmup W] [--steps S]
 *        bench_step gpu [--backend NAME] [--batch N] [--warmup W] [--steps S] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "vicreg/spectrogram.h"
#include "vicreg/vicreg.h"
#include "vr_config.h"

#if VR_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* multiply-accumulates of one forward pass over conv and linear layers (the peer's count) */
static double resnet_macs(const vr_resnet *r, int n)
{
    double macs = 0;
    const vr_convbn *units[1024];
    int count = 0;
    units[count++] = &r->stem;
    for (int i = 0; i < r->nblocks; i++) {
        for (int j = 0; j < r->blocks[i].nconv; j++) units[count++] = &r->blocks[i].conv[j];
        if (r->blocks[i].has_down) units[count++] = &r->blocks[i].down;
    }
    for (int i = 0; i < count; i++) {
        const vr_convbn *l = units[i];
        double kk = r->cfg.rank == 2 ? (double)l->k * l->k : l->k;
        macs += (double)n * l->cout * l->h_out * l->w_out * l->cin * kk;
    }
    return macs;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_step: %s: %s\n", what, vr_last_error());
    exit(1);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* Config c: the audio recipe's two branches, the log-mel of each batch inside the step. */
static int bench_audio(int threads, int warmup, int steps)
{
    const int n = 64, len = 16000;
    vr_backend *be;
    if (vr_backend_create("cpu", threads, &be)) die("backend");
    vr_branch_config bc[2];
    vr_branch_config_wave(&bc[0], "2048-2048-2048");
    vr_branch_config_spec(&bc[1], "2048-2048-2048");
    vr_model m;
    if (vr_model_create(&m, be, 2, bc) || vr_model_init(&m, 0)) die("model");
    vr_spectrogram_config sc;
    vr_spectrogram_default(&sc);
    vr_spectrogram *sp;
    if (vr_spectrogram_create(&sc, &sp)) die("spectrogram");
    int frames = (int)vr_spectrogram_frames(sp, len);
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_SGD);
    oc.exclude_1d = 0;
    vr_trainer t;
    int h[2] = {1, sc.n_mels}, w[2] = {len, frames};
    if (vr_trainer_create(&t, &m, &oc, n, h, w)) die("trainer");
    float *wave = vr_alloc((size_t)n * len * sizeof(float));              /* (N,1,L) */
    float *mel = vr_alloc((size_t)n * sc.n_mels * frames * sizeof(float)); /* (N,1,M,T) */
    vr_rng rng;
    vr_rng_seed(&rng, 0);
    double *times = calloc((size_t)steps, sizeof *times), *fe = calloc((size_t)steps, sizeof *fe);
    double first = 0, last = 0;
    for (int it = 0; it < warmup + steps; it++) {
        for (size_t i = 0; i < (size_t)n * len; i++) wave[i] = 0.1f * vr_rng_normal(&rng);
        const float *inputs[2] = {wave, mel};
        vr_vicreg_terms terms;
        double t0 = now();
        if (vr_spectrogram_mel_batch(sp, wave, n, len, threads, mel)) die("log-mel");
        double t1 = now();
        if (vr_trainer_step(&t, inputs, 0.01f, &terms)) die("step");
        double dt = now() - t0;
        if (it == 0) first = terms.loss;
        last = terms.loss;
        if (it >= warmup) {
            times[it - warmup] = dt;
            fe[it - warmup] = t1 - t0;
        }
        fprintf(stderr, "  [c] step %2d %s %7.3fs (log-mel %.1f ms) loss %.4f (inv %.4f std %.4f cov %.4f)\n", it,
                it < warmup ? "warm" : "time", dt, 1e3 * (t1 - t0), terms.loss, terms.invariance, terms.variance,
                terms.covariance);
    }
    double med = median(times, steps), med_fe = median(fe, steps);
    double macs = 0;
    for (int b = 0; b < 2; b++) {
        macs += resnet_macs(&m.branch[b].enc, n);
        for (int i = 0; i < m.branch[b].exp.nlayers; i++)
            macs += (double)n * m.branch[b].exp.dims[i] * m.branch[b].exp.dims[i + 1];
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RESULT {\"config\": \"c_audio_wave_spec_b64\", \"batch_pairs\": %d, \"params_M\": %.2f, "
           "\"fwd_GMAC_per_step\": %.2f, \"median_step_s\": %.4f, \"min_step_s\": %.4f, "
           "\"max_step_s\": %.4f, \"pairs_per_s\": %.2f, \"approx_train_GFLOP_per_s\": %.1f, "
           "\"peak_rss_MB\": %.1f, \"loss_first\": %.4f, \"loss_last\": %.4f, \"logmel_ms\": %.2f, "
           "\"threads\": %d, \"warmup\": %d, \"steps\": %d}\n",
           n, (double)m.params.total / 1e6, macs / 1e9, med, times[0], times[steps - 1], n / med,
           6.0 * macs / 1e9 / med, ru.ru_maxrss / 1024.0, first, last, 1e3 * med_fe, threads, warmup, steps);
    free(times);
    free(fe);
    vr_free(wave);
    vr_free(mel);
    vr_trainer_free(&t);
    vr_spectrogram_destroy(sp);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return 0;
}

/* Config gpu: the ResNet-50 VICReg step of the GPU comparison on a CUDA backend. */
static int bench_gpu(const char *backend, int n, int warmup, int steps)
{
#if VR_HAVE_CUDA
    const int hw = 224;
    size_t free0, free1, total;
    cudaError_t ce = cudaFree(NULL);
    if (ce == cudaSuccess) ce = cudaMemGetInfo(&free0, &total);
    if (ce != cudaSuccess) {
        fprintf(stderr, "bench_step gpu: no CUDA device: %s\n", cudaGetErrorString(ce));
        return 1;
    }
    vr_backend *be;
    if (vr_backend_create(backend, 0, &be)) die("backend");
    vr_branch_config bc;
    vr_branch_config_image(&bc, 50, "8192-8192-8192");
    vr_model m;
    if (vr_model_create(&m, be, 1, &bc) || vr_model_init(&m, 0)) die("model");
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_SGD);
    oc.exclude_1d = 0;
    vr_trainer t;
    int h[1] = {hw}, w[1] = {hw};
    if (vr_trainer_create(&t, &m, &oc, n, h, w)) die("trainer");
    size_t in_count = (size_t)2 * n * 3 * hw * hw;
    float *x = vr_alloc(in_count * sizeof(float)), *xd;
    if (!x) die("input");
    vr_rng rng;
    vr_rng_seed(&rng, 0);
    for (size_t i = 0; i < in_count; i++) x[i] = vr_rng_normal(&rng);
    if (be->alloc(be, in_count * sizeof(float), &xd) || be->upload(be, xd, x, in_count))
        die("input upload");
    double *times = calloc((size_t)steps, sizeof *times);
    double first = 0, last = 0;
    for (int it = 0; it < warmup + steps; it++) {
        const float *inputs[1] = {xd};
        vr_vicreg_terms terms;
        /* a start/end range, not push/pop: it holds the kernels of every thread */
        nvtxRangeId_t range = it >= warmup ? nvtxRangeStartA("step") : 0;
        double t0 = now();
        if (vr_trainer_step(&t, inputs, 1e-3f, &terms) || be->sync(be)) die("step");
        double dt = now() - t0;
        if (it >= warmup) nvtxRangeEnd(range);
        if (it == 0) first = terms.loss;
        last = terms.loss;
        if (it >= warmup) times[it - warmup] = dt;
        fprintf(stderr, "  [gpu %s b%d] step %2d %s %7.4fs loss %.4f\n", backend, n, it,
                it < warmup ? "warm" : "time", dt, terms.loss);
    }
    if (cudaMemGetInfo(&free1, &total) != cudaSuccess) die("cudaMemGetInfo");
    double med = median(times, steps);
    const char *prec = strcmp(backend, "cuda-bf16") == 0   ? "bf16"
                       : strcmp(backend, "cuda-tf32") == 0 ? "tf32"
                                                           : "fp32";
    printf("RESULT {\"config\": \"gpu_resnet50_224px_b%d_%s\", \"side\": \"ours\", "
           "\"backend\": \"%s\", \"batch_pairs\": %d, \"median_step_s\": %.5f, "
           "\"min_step_s\": %.5f, \"max_step_s\": %.5f, \"pairs_per_s\": %.2f, "
           "\"views_per_s\": %.2f, \"peak_mem_MB\": %.1f, \"model_MB\": %.1f, "
           "\"loss_first\": %.4f, \"loss_last\": %.4f, \"warmup\": %d, \"steps\": %d}\n",
           n, prec, backend, n, med, times[0], times[steps - 1], n / med, 2 * n / med,
           (double)(free0 - free1) / (1 << 20), (double)vr_model_bytes(&m) / (1 << 20), first,
           last, warmup, steps);
    free(times);
    vr_free(x);
    be->free(be, xd);
    vr_trainer_free(&t);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return 0;
#else
    (void)backend, (void)n, (void)warmup, (void)steps;
    fprintf(stderr, "bench_step gpu: this build has no CUDA backend\n");
    return 2;
#endif
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "gpu")) {
        const char *backend = "cuda";
        int batch = 64, warmup = 5, steps = 20;
        for (int i = 2; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
            else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
            else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
            else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        }
        if (batch < 2 || warmup < 0 || steps < 1) {
            fprintf(stderr, "bench_step gpu: need --batch >= 2, --warmup >= 0, --steps >= 1\n");
            return 2;
        }
        return bench_gpu(backend, batch, warmup, steps);
    }
    if (argc < 2 || (strcmp(argv[1], "a") && strcmp(argv[1], "b") && strcmp(argv[1], "c"))) {
        fprintf(stderr, "usage: bench_step a|b|c [--threads N] [--warmup W] [--steps S]\n"
                        "       bench_step gpu [--backend NAME] [--batch N] [--warmup W] [--steps S]\n");
        return 2;
    }
    int cfg_a = argv[1][0] == 'a', cfg_c = argv[1][0] == 'c';
    int threads = 2, warmup = cfg_a || cfg_c ? 3 : 2, steps = cfg_a || cfg_c ? 10 : 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    }
    if (cfg_c) return bench_audio(threads, warmup, steps);
    int n = cfg_a ? 64 : 8, hw = cfg_a ? 64 : 224;
    vr_backend *be;
    if (vr_backend_create("cpu", threads, &be)) die("backend");
    vr_branch_config bc;
    vr_branch_config_image(&bc, cfg_a ? 18 : 50, cfg_a ? "2048-2048-2048" : "8192-8192-8192");
    vr_model m;
    if (vr_model_create(&m, be, 1, &bc) || vr_model_init(&m, 0)) die("model");
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_SGD);
    oc.exclude_1d = 0;
    vr_trainer t;
    int h[1] = {hw}, w[1] = {hw};
    if (vr_trainer_create(&t, &m, &oc, n, h, w)) die("trainer");
    size_t in_count = (size_t)2 * n * 3 * hw * hw;
    float *x = vr_alloc(in_count * sizeof(float));
    vr_rng rng;
    vr_rng_seed(&rng, 0);
    double *times = calloc((size_t)steps, sizeof *times);
    double first = 0, last = 0;
    for (int it = 0; it < warmup + steps; it++) {
        for (size_t i = 0; i < in_count; i++) x[i] = vr_rng_normal(&rng);
        const float *inputs[1] = {x};
        vr_vicreg_terms terms;
        double t0 = now();
        if (vr_trainer_step(&t, inputs, cfg_a ? 0.01f : 1e-3f, &terms)) die("step");
        double dt = now() - t0;
        if (it == 0) first = terms.loss;
        last = terms.loss;
        if (it >= warmup) times[it - warmup] = dt;
        fprintf(stderr, "  [%s] step %2d %s %7.3fs loss %.4f (inv %.4f std %.4f cov %.4f)\n",
                argv[1], it, it < warmup ? "warm" : "time", dt, terms.loss, terms.invariance,
                terms.variance, terms.covariance);
    }
    double med = median(times, steps);
    double macs = resnet_macs(&m.branch[0].enc, 2 * n);
    for (int i = 0; i < m.branch[0].exp.nlayers; i++)
        macs += 2.0 * n * m.branch[0].exp.dims[i] * m.branch[0].exp.dims[i + 1];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RESULT {\"config\": \"%s\", \"batch_pairs\": %d, \"params_M\": %.2f, "
           "\"fwd_GMAC_per_step\": %.2f, \"median_step_s\": %.4f, \"min_step_s\": %.4f, "
           "\"max_step_s\": %.4f, \"pairs_per_s\": %.2f, \"approx_train_GFLOP_per_s\": %.1f, "
           "\"peak_rss_MB\": %.1f, \"loss_first\": %.4f, \"loss_last\": %.4f, \"threads\": %d, "
           "\"warmup\": %d, \"steps\": %d}\n",
           cfg_a ? "a_resnet18_64px_b64" : "b_resnet50_224px_b8", n,
           (double)m.params.total / 1e6, macs / 1e9, med, times[0], times[steps - 1], n / med,
           6.0 * macs / 1e9 / med, ru.ru_maxrss / 1024.0, first, last, threads, warmup, steps);
    free(times);
    vr_free(x);
    vr_trainer_free(&t);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return 0;
}
