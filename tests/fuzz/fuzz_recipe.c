/* libFuzzer target: recipes (src/run/recipe.c), the INI file and the --set overrides. The
 * input is the recipe text, optionally followed by a line "%%" and then one --set argument per
 * line (at most 8):
 *
 *   [train]
 *   epochs = 3
 *   %%
 *   train.batch=64
 *
 * The text is loaded from a file (vr_recipe_load) and, when it holds no NUL byte, from memory
 * (vr_recipe_load_text); the two must agree. A recipe that loads must survive its own canonical
 * form: vr_recipe_format's text loads again and formats to the same text, as the run directory
 * and the checkpoints rely on. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "recipe.h"

#define MAX_SETS 8

static fuzz_file file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The recipe that loads from text must format to `text` again. */
static void check_canonical(const char *text)
{
    vr_recipe again;
    if (vr_recipe_load_text(&again, text, "canonical", NULL, 0) != VR_OK) {
        fprintf(stderr, "canonical text refused: %s\n%s", vr_last_error(), text);
        abort();
    }
    char *text2 = vr_recipe_format(&again);
    if (!text2) abort();
    if (strcmp(text, text2) != 0) {
        fprintf(stderr, "canonical text changed on reload:\n%s\n---\n%s", text, text2);
        abort();
    }
    free(text2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* body [0, body_len), then the --set lines as C strings in a copy */
    size_t body_len = size;
    const uint8_t *mark = memmem(data, size, "\n%%\n", 4);
    if (mark) body_len = (size_t)(mark - data) + 1;
    char *copy = malloc(size + 1);
    if (!copy) abort();
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *sets[MAX_SETS];
    int n_sets = 0;
    if (mark) {
        char *p = copy + body_len + 3;
        while (n_sets < MAX_SETS && p < copy + size) {
            char *nl = strchr(p, '\n');
            if (nl) *nl = '\0';
            sets[n_sets++] = p;
            if (!nl) break;
            p = nl + 1;
        }
    }

    vr_recipe r;
    vr_status s = vr_recipe_load(&r, fuzz_file_put(&file, data, body_len), sets, n_sets);
    char *text = s == VR_OK ? vr_recipe_format(&r) : NULL;
    if (s == VR_OK && !text) abort();

    copy[body_len] = '\0';
    if (memchr(copy, '\0', body_len) == NULL) {
        vr_recipe r2;
        vr_status s2 = vr_recipe_load_text(&r2, copy, "text", sets, n_sets);
        if ((s2 == VR_OK) != (s == VR_OK)) {
            fprintf(stderr, "file and text disagree: %d vs %d (%s)\n", s, s2, vr_last_error());
            abort();
        }
        if (s2 == VR_OK) {
            char *text2 = vr_recipe_format(&r2);
            if (!text2 || strcmp(text, text2) != 0) abort();
            free(text2);
        }
    }

    if (s == VR_OK) {
        check_canonical(text);
        vr_branch_config bc[VR_MAX_BRANCHES];
        vr_recipe_branches(&r, bc);
        vr_recipe_schedule(&r, 100);
        vr_recipe_samples(&r, r.clip_seconds);
    }
    free(text);
    free(copy);
    return 0;
}
