/* Writes a toolkit checkpoint of a torchvision-shaped ResNet-18 (+ expander) after two LARS
 * steps on random views, and an input file {x, repr} with the eval-mode representation of
 * random images, for check_checkpoint.py to compare against torchvision:
 *
 *   build/tests/reference/write_checkpoint /tmp/ck.safetensors /tmp/in.safetensors
 *   /usr/bin/python3 tests/reference/check_checkpoint.py /tmp/ck.safetensors /tmp/in.safetensors */
#include <stdio.h>
#include <stdlib.h>

#include "vicreg/vicreg.h"

static int fail(const char *what)
{
    fprintf(stderr, "write_checkpoint: %s: %s\n", what, vr_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: write_checkpoint CHECKPOINT.safetensors INPUT.safetensors\n");
        return 2;
    }
    vr_backend *be;
    if (vr_backend_create("cpu", 0, &be)) return fail("backend");
    vr_branch_config bc;
    vr_branch_config_image(&bc, 18, "1024-1024");
    vr_model m;
    if (vr_model_create(&m, be, 1, &bc) || vr_model_init(&m, 11)) return fail("model");
    vr_optim_config oc;
    vr_optim_config_default(&oc, VR_OPTIM_LARS);
    vr_trainer t;
    int n = 8, hw = 64;
    if (vr_trainer_create(&t, &m, &oc, n, &hw, &hw)) return fail("trainer");
    vr_rng rng;
    vr_rng_seed(&rng, 1);
    size_t nx = (size_t)2 * n * 3 * hw * hw;
    float *x = vr_alloc(nx * sizeof(float));
    for (int s = 0; s < 2; s++) { /* weights and running statistics move away from their init */
        for (size_t i = 0; i < nx; i++) x[i] = vr_rng_normal(&rng);
        const float *in[1] = {x};
        vr_vicreg_terms terms;
        if (vr_trainer_step(&t, in, 0.3f, &terms)) return fail("step");
    }
    vr_run_state run = {.step = t.step, .rng = rng};
    if (vr_checkpoint_save(argv[1], &m, &t.optim, &run, NULL)) return fail("save");

    int ne = 3;
    for (size_t i = 0; i < (size_t)ne * 3 * hw * hw; i++) x[i] = vr_rng_normal(&rng);
    vr_ctx c = vr_model_ctx(&m, ne, 1, 0);
    if (vr_resnet_forward(&m.branch[0].enc, &c, x)) return fail("forward");
    vr_st_writer *w;
    int64_t xs[4] = {ne, 3, hw, hw}, rs[2] = {ne, m.branch[0].enc.out_dim};
    if (vr_st_writer_new(&w) || vr_st_add(w, "x", VR_DTYPE_F32, 4, xs, x) ||
        vr_st_add(w, "repr", VR_DTYPE_F32, 2, rs, c.ws + m.branch[0].enc.repr) ||
        vr_st_write(w, argv[2]))
        return fail("input file");
    vr_st_writer_free(w);
    printf("wrote %s (%d tensors) and %s\n", argv[1], m.params.count + m.buffers.count, argv[2]);
    vr_free(x);
    vr_trainer_free(&t);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return 0;
}
