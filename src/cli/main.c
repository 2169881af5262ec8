/* vicreg: the command-line entry point; dispatches to one command per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *usage_text =
    "usage: vicreg COMMAND [ARGS]\n"
    "\n"
    "VICReg self-supervised joint-embedding learning: grayscale image sets (Fashion-MNIST,\n"
    "MNIST), folders of JPEG/PNG images (ImageNet's layout) and audio (a waveform and a\n"
    "spectrogram encoder trained together).\n"
    "\n"
    "commands:\n"
    "  train RECIPE.ini [--set section.key=value]... [--resume CHECKPOINT] [--dry-run]\n"
    "                     train a model as the recipe says; k-NN evaluation at the end\n"
    "  eval knn CHECKPOINT | --random-init RECIPE.ini [--set ...] [--json PATH]\n"
    "                     k-NN top-1/top-5 of each branch's representations; for audio also\n"
    "                     cross-modal recall\n"
    "  eval linear CHECKPOINT | --random-init RECIPE.ini [--epochs N] [--lr X] [--json PATH]\n"
    "                     linear-probe top-1/top-5 on frozen representations (SGD protocol)\n"
    "  eval retrieval SET.npy [--paired OTHER.npy] [--baselines] [--json PATH]\n"
    "                     label retrieval (R@k, mAP) and cross-modal recall of an embedding set\n"
    "  index build EMBEDDINGS.npy -o INDEX [--metric ip|l2] [--factory STR]\n"
    "                     a search index of an embedding set: exact, or FAISS (IVF, HNSW, PQ)\n"
    "  search INDEX --query Q.npy|AUDIO|DIR [-k 10] [--json]\n"
    "                     the k best rows of the index for each query\n"
    "  spectrogram AUDIO -o OUT.npy|OUT.png [--recipe R.ini] [--set ...]\n"
    "                     a recipe's log-mel spectrogram of one file\n"
    "  info CHECKPOINT    tensors, parameter counts and metadata of a checkpoint\n"
    "  embed CHECKPOINT --branch wave|spec|logmel|image INPUTS... -o OUT.npy\n"
    "                     embeddings of audio files, folders or manifests (or IDX images)\n"
    "\n"
    "  vicreg COMMAND --help   more about one command\n"
    "\n"
    "exit status: 0 success, 1 runtime error (files, numbers, memory), 2 usage error\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return VR_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return VR_EXIT_OK;
    }
    if (!strcmp(cmd, "train")) return vr_cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "index")) return vr_cmd_index(argc - 1, argv + 1);
    if (!strcmp(cmd, "search")) return vr_cmd_search(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return vr_cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return vr_cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "spectrogram")) return vr_cmd_spectrogram(argc - 1, argv + 1);
    if (!strcmp(cmd, "embed")) return vr_cmd_embed(argc - 1, argv + 1);
    fprintf(stderr, "vicreg: unknown command '%s'\n\n%s", cmd, usage_text);
    return VR_EXIT_USAGE;
}
