/* vicreg eval knn and vicreg eval linear: weighted k-NN accuracy and the linear probe of a
 * checkpoint's (or a fresh model's) encoder on its recipe's data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "featurize.h"
#include "vicreg/checkpoint.h"
#include "vicreg/safetensors.h"

static const char *eval_help =
    "usage: vicreg eval retrieval SET.npy ...   (see: vicreg eval retrieval --help)\n"
    "       vicreg eval knn CHECKPOINT [--set section.key=value]... [--json PATH]\n"
    "       vicreg eval knn --random-init RECIPE.ini [--set section.key=value]... [--json PATH]\n"
    "       vicreg eval linear CHECKPOINT | --random-init RECIPE.ini [--epochs N] [--lr X]\n"
    "                          [--set section.key=value]... [--json PATH]\n"
    "\n"
    "Weighted k-NN classification (InstDisc protocol, as VICReg's 20-NN): the encoder's\n"
    "representations of the recipe's training and test splits in evaluation mode (IDX: the\n"
    "whole image resized to [views] size; folder: resized to [image_views] size divided by\n"
    "eval_crop_fraction and centre-cropped, 256 -> 224 for ImageNet; normalised as the views),\n"
    "L2-normalised; each test image takes its [eval] k most cosine-similar training images,\n"
    "weighted exp(sim / [eval] temperature). [eval] train_limit / test_limit take the first\n"
    "images of an IDX file, and of a folder images spread evenly over its classes.\n"
    "Prints top-1 and top-5 accuracy; with [eval] linear = sgd or adam also a linear probe.\n"
    "\n"
    "Linear evaluation (shared/SPEC.md's protocol on frozen representations): the encoder's\n"
    "representations of both splits as above; a linear head N(0, 0.01) trained by SGD with\n"
    "momentum 0.9, weight decay 1e-6, batch 256, for --epochs (100) epochs at --lr (0.02) on a\n"
    "cosine per epoch; the test split scored after every epoch, the best epoch's top-1/top-5\n"
    "reported (the reference's figure) beside the last epoch's. The representations are\n"
    "computed once from the evaluation input, where the reference feeds each epoch new random\n"
    "crops and flips of the training images.\n"
    "\n"
    "  CHECKPOINT          a training checkpoint; its stored recipe gives model and data\n"
    "  --random-init R     an untrained model built and initialised (train.seed) from recipe R:\n"
    "                      the baseline a trained encoder should beat\n"
    "  --set s.k=v         override a recipe key (e.g. eval.test_limit=2000, eval.k=200)\n"
    "  --epochs N          linear: training epochs of the head (default 100)\n"
    "  --lr X              linear: learning rate at epoch 0 (default 0.02)\n"
    "  --json PATH         also write the result as a JSON object\n";

/* The recipe stored in a checkpoint, and its step. */
static vr_status checkpoint_recipe(const char *path, vr_recipe *r, const char **sets, int n_sets,
                                   long *step)
{
    vr_safetensors *st;
    VR_TRY(vr_st_open(path, &st));
    const char *text = vr_st_metadata(st, "recipe"), *steps = vr_st_metadata(st, "step");
    char name[600];
    snprintf(name, sizeof name, "%s (stored recipe)", path);
    vr_status s = text ? vr_recipe_load_text(r, text, name, sets, n_sets)
                       : vr_fail(VR_ERR_NOT_FOUND, "eval", "%s: holds no recipe; not written by vicreg train", path);
    *step = steps ? atol(steps) : 0;
    vr_st_close(st);
    return s;
}

int vr_cmd_eval(int argc, char **argv)
{
    const char *cmd = "eval";
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) return fputs(eval_help, stdout), VR_EXIT_OK;
    if (argc >= 2 && !strcmp(argv[1], "retrieval")) return vr_cmd_eval_retrieval(argc - 1, argv + 1);
    int linear = argc >= 2 && !strcmp(argv[1], "linear");
    if (argc < 2 || (strcmp(argv[1], "knn") != 0 && !linear))
        return vr_cli_usage(cmd, "expected 'eval knn', 'eval linear' or 'eval retrieval'");
    cmd = linear ? "eval linear" : "eval knn";
    const char *sets[VR_CLI_MAX_SETS], *checkpoint = NULL, *recipe_path = NULL, *json = NULL;
    int n_sets = 0;
    vr_probe_config pc;
    vr_probe_config_default(&pc, VR_PROBE_SGD);
    for (int i = 2; i < argc; i++) {
        int took = vr_cli_take_set(cmd, argc, argv, &i, sets, &n_sets);
        if (took < 0) return VR_EXIT_USAGE;
        if (took) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(eval_help, stdout), VR_EXIT_OK;
        if (!strcmp(a, "--random-init") || !strcmp(a, "--json")) {
            if (i + 1 >= argc) return vr_cli_usage(cmd, "%s needs a path", a);
            *(a[2] == 'r' ? &recipe_path : &json) = argv[++i];
        } else if (linear && (!strcmp(a, "--epochs") || !strcmp(a, "--lr"))) {
            char *end = NULL;
            double x = i + 1 < argc ? strtod(argv[i + 1], &end) : 0;
            int ok = end && end != argv[i + 1] && !*end;
            if (a[2] == 'e' && (!ok || x < 1 || x > 1e6 || x != (int)x))
                return vr_cli_usage(cmd, "--epochs needs a whole number in 1..1000000");
            if (a[2] == 'l' && (!ok || !(x > 0 && x <= 100)))
                return vr_cli_usage(cmd, "--lr needs a number in (0, 100]");
            if (a[2] == 'e') pc.epochs = (int)x;
            else pc.lr = (float)x;
            i++;
        } else if (a[0] == '-' && a[1]) {
            return vr_cli_usage(cmd, "unknown option '%s'", a);
        } else if (checkpoint) {
            return vr_cli_usage(cmd, "one checkpoint only ('%s' and '%s')", checkpoint, a);
        } else {
            checkpoint = a;
        }
    }
    if (!checkpoint == !recipe_path) return vr_cli_usage(cmd, "give a CHECKPOINT or --random-init RECIPE.ini (one of them)");

    vr_recipe r;
    long step = 0;
    vr_status s = checkpoint ? checkpoint_recipe(checkpoint, &r, sets, n_sets, &step)
                             : vr_recipe_load(&r, recipe_path, sets, n_sets);
    if (s != VR_OK) return vr_cli_fail(s == VR_ERR_ARG ? VR_EXIT_USAGE : VR_EXIT_RUNTIME, cmd);

    vr_backend *be;
    vr_model m;
    if (vr_cli_open_model(&r, &be, &m) != VR_OK) return vr_cli_fail(VR_EXIT_RUNTIME, "model");
    vr_source shape;
    s = vr_source_peek(&shape, &r);
    if (s == VR_OK) s = vr_features_plan(&m, &shape, r.eval_batch);
    vr_source_free(&shape);
    if (s == VR_OK) s = checkpoint ? vr_checkpoint_load(checkpoint, &m, NULL, NULL) : vr_model_init(&m, r.seed);
    const char *label = checkpoint ? "trained" : "random-init";
    pc.seed = r.seed;
    int rc = s != VR_OK ? vr_cli_fail(VR_EXIT_RUNTIME, cmd)
             : linear   ? vr_cli_evaluate_linear(&r, &m, label, step, &pc, json)
                        : vr_cli_evaluate(&r, &m, NULL, label, step, json);
    vr_model_free(&m);
    vr_backend_destroy(be);
    return rc;
}
