/* The vicreg command-line tool: commands and the pieces they share. Only this tool prints or
 * exits; the library returns statuses and messages (vr_last_error). */
#ifndef VR_CLI_H
#define VR_CLI_H

#include <cjson/cJSON.h>

#include "vicreg/idx.h"
#include "vicreg/knn.h"
#include "vicreg/probe.h"
#include "recipe.h"
#include "source.h"

enum { VR_EXIT_OK = 0, VR_EXIT_RUNTIME = 1, VR_EXIT_USAGE = 2 };

int vr_cmd_train(int argc, char **argv);
int vr_cmd_index(int argc, char **argv);
int vr_cmd_search(int argc, char **argv);
int vr_cmd_eval(int argc, char **argv);
/* vicreg eval retrieval (argv[0] is "retrieval") */
int vr_cmd_eval_retrieval(int argc, char **argv);
int vr_cmd_info(int argc, char **argv);
int vr_cmd_spectrogram(int argc, char **argv);
int vr_cmd_embed(int argc, char **argv);

/* Prints "vicreg: <context>: <library message>" to stderr and returns code. */
int vr_cli_fail(int code, const char *context);
/* Prints "vicreg CMD: <message>" and a pointer to CMD --help; returns VR_EXIT_USAGE. */
int vr_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Seconds on a monotonic clock. */
double vr_cli_now(void);
/* "1h02m", "4m05s", "12s" */
void vr_cli_duration(char *buf, size_t len, double seconds);

/* Collects the --set arguments shared by train and eval: returns 1 when argv[*i] was one
 * (consuming its value), 0 when not, -1 on a usage error already reported. */
int vr_cli_take_set(const char *cmd, int argc, char **argv, int *i, const char **sets, int *n_sets);
#define VR_CLI_MAX_SETS 64

/* A backend and the recipe's model on it (not initialised, not planned). OpenMP's thread count
 * is set to the recipe's, so views, k-NN and BLAS use the same cores as the kernels. */
vr_status vr_cli_open_model(const vr_recipe *r, vr_backend **be, vr_model *m);

/* k-NN top-1/top-5 of m's encoder (branch 0, evaluation mode, planned for views of the
 * recipe's size): training representations from `train` (the recipe's training split when
 * NULL), test ones from the recipe's test split, each cut to the recipe's eval limits. */
vr_status vr_cli_knn(const vr_recipe *r, vr_model *m, const vr_gray_dataset *train,
                     vr_knn_result *res);
/* Prints the result line to stdout and, when path is not NULL, writes it as a JSON object. */
vr_status vr_cli_knn_report(const vr_recipe *r, const vr_knn_result *res, const char *label,
                            long step, double seconds, const char *path);

/* Evaluates m (planned for the data's inputs) on r's data: the training split `train` (read
 * from the recipe when NULL) and the test split. Prints the figures, writes them as JSON to
 * json_path when not NULL; returns an exit status. */
int vr_cli_evaluate(const vr_recipe *r, vr_model *m, vr_source *train, const char *label, long step,
                    const char *json_path);
/* The linear evaluation of m (planned for the data's inputs): a linear probe with protocol pc
 * (vicreg/probe.h) on each branch's frozen representations of the training split, scored on
 * the test split, both cut to the recipe's eval limits. Prints the best epoch's top-1/top-5
 * (the reference's figure) and the last epoch's, writes them as JSON to json_path when not
 * NULL; returns an exit status. */
int vr_cli_evaluate_linear(const vr_recipe *r, vr_model *m, const char *label, long step, const vr_probe_config *pc,
                           const char *json_path);
/* j as one line of JSON at path, written atomically. */
vr_status vr_cli_write_json(const char *path, const cJSON *j);
/* One warning line per file a data set skipped that was not reported before (audio: and their
 * count). */
void vr_cli_report_skipped(vr_source *s);

/* Audio inputs: each argument a file, a folder (walked recursively, taking the files whose
 * extension is an audio format's; label = the first-level sub-folder's name) or a labels.csv
 * manifest (path, label, and with `select` only the rows of that split). Listed in the order
 * given; files are not opened here. */
typedef struct vr_cli_input {
    char *path;
    char *label; /* "" when unknown */
} vr_cli_input;
typedef struct vr_cli_inputs {
    int n, cap;
    vr_cli_input *items;
} vr_cli_inputs;
vr_status vr_cli_list_inputs(char *const *args, int nargs, const char *select, vr_cli_inputs *in);
void vr_cli_inputs_free(vr_cli_inputs *in);

#endif
