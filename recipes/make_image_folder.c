/* make_image_folder: an IDX image set (MNIST, Fashion-MNIST) written as an ImageFolder of
 * grayscale JPEGs, OUT/<class>/<index>.jpg, for the folder kind of the recipes. A data-making
 * tool run once (recipes/make_fashion_mnist_folder.sh), not part of training.
 *
 *   make_image_folder IMAGES LABELS OUT [--classes NAME0,NAME1,...] [--quality Q]
 *
 * Class folders are named "<label>-<name>" with the label zero-padded to the width of the
 * largest one, so their bytewise order (the folder kind's labels) is the IDX labels' order;
 * without --classes, just "<label>". Files are named by their index in the IDX file (zero
 * padded, so bytewise order is file order). Pixels are written as 1-component (grayscale)
 * JPEGs through TurboJPEG at quality Q (default 95); the loader decodes them to RGB with the
 * gray replicated, as PIL's convert("RGB") does. OUT must not exist: everything is written to
 * OUT.partial and renamed at the end, so an interrupted run never leaves a set that looks
 * whole. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>

#include "vicreg/idx.h"

#define MAX_CLASSES 256

static int usage(void)
{
    fprintf(stderr, "usage: make_image_folder IMAGES LABELS OUT [--classes NAME0,NAME1,...] [--quality Q]\n");
    return 2;
}

static int digits(int x)
{
    int d = 1;
    while (x >= 10) x /= 10, d++;
    return d;
}

/* Splits "a,b,c" into names (pointers into the copy `list`); returns the count or -1. */
static int split_names(char *list, char **names)
{
    int n = 0;
    for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
        if (n == MAX_CLASSES || !*p || strchr(p, '/')) return -1;
        names[n++] = p;
    }
    return n;
}

static int write_file(const char *path, const unsigned char *data, unsigned long size)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

int main(int argc, char **argv)
{
    if (argc < 4) return usage();
    const char *images = argv[1], *labels = argv[2], *out = argv[3];
    char *class_list = NULL, *names[MAX_CLASSES];
    int quality = 95, nnames = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--classes") && i + 1 < argc) class_list = argv[++i];
        else if (!strcmp(argv[i], "--quality") && i + 1 < argc) quality = atoi(argv[++i]);
        else return usage();
    }
    if (quality < 1 || quality > 100) return fprintf(stderr, "make_image_folder: --quality must be 1..100\n"), 2;
    if (class_list && (nnames = split_names(class_list, names)) < 0)
        return fprintf(stderr, "make_image_folder: --classes: names must be non-empty, without '/'\n"), 2;
    struct stat st;
    if (stat(out, &st) == 0) return fprintf(stderr, "make_image_folder: %s exists; remove it first\n", out), 1;

    vr_gray_dataset ds;
    if (vr_gray_dataset_load(images, labels, 0, &ds) != VR_OK)
        return fprintf(stderr, "make_image_folder: %s\n", vr_last_error()), 1;
    if (nnames && nnames != ds.nclasses) {
        fprintf(stderr, "make_image_folder: %d class names for %d classes\n", nnames, ds.nclasses);
        vr_gray_dataset_free(&ds);
        return 2;
    }
    char partial[4096], path[4096 + 512];
    snprintf(partial, sizeof partial, "%s.partial", out);
    int rc = 0;
    if (mkdir(partial, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_image_folder: cannot create %s: %s\n", partial, strerror(errno));
        rc = 1;
    }
    int wl = digits(ds.nclasses - 1), wi = digits(ds.n - 1);
    for (int k = 0; k < ds.nclasses && !rc; k++) {
        int n = nnames ? snprintf(path, sizeof path, "%s/%0*d-%s", partial, wl, k, names[k])
                       : snprintf(path, sizeof path, "%s/%0*d", partial, wl, k);
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "make_image_folder: the path of class %d is too long\n", k);
            rc = 1;
        } else if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "make_image_folder: cannot create %s: %s\n", path, strerror(errno));
            rc = 1;
        }
    }
    tjhandle tj = rc ? NULL : tjInitCompress();
    if (!rc && !tj) {
        fprintf(stderr, "make_image_folder: TurboJPEG: %s\n", tjGetErrorStr());
        rc = 1;
    }
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    for (int i = 0; i < ds.n && !rc; i++) {
        int k = ds.labels[i];
        int n = nnames ? snprintf(path, sizeof path, "%s/%0*d-%s/%0*d.jpg", partial, wl, k, names[k], wi, i)
                       : snprintf(path, sizeof path, "%s/%0*d/%0*d.jpg", partial, wl, k, wi, i);
        const unsigned char *px = ds.images + (size_t)i * ds.h * ds.w;
        if (n < 0 || (size_t)n >= sizeof path) {
            fprintf(stderr, "make_image_folder: the path of image %d is too long\n", i);
            rc = 1;
        } else if (tjCompress2(tj, px, ds.w, ds.w, ds.h, TJPF_GRAY, &jpeg, &size, TJSAMP_GRAY, quality, 0) != 0) {
            fprintf(stderr, "make_image_folder: %s: TurboJPEG: %s\n", path, tjGetErrorStr());
            rc = 1;
        } else if (!write_file(path, jpeg, size)) {
            fprintf(stderr, "make_image_folder: cannot write %s: %s\n", path, strerror(errno));
            rc = 1;
        }
    }
    tjFree(jpeg);
    if (tj) tjDestroy(tj);
    if (!rc && rename(partial, out) != 0) {
        fprintf(stderr, "make_image_folder: cannot rename %s to %s: %s\n", partial, out, strerror(errno));
        rc = 1;
    }
    if (!rc) printf("make_image_folder: %d images of %d classes (%dx%d) -> %s\n", ds.n, ds.nclasses, ds.w, ds.h, out);
    vr_gray_dataset_free(&ds);
    return rc;
}
