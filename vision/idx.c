/* IDX reader (MNIST-style files, gzip or plain) for the grayscale image data sets. */
#include "vicreg/idx.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "vicreg/tensor.h"

#define IDX_TYPE_U8 0x08
/* A guard against a corrupt size field asking for an absurd allocation: 4 GiB is far beyond
 * any IDX data set in use (Fashion-MNIST's training images are 47 MB). */
#define IDX_MAX_BYTES ((uint64_t)1 << 32)
/* deflate's largest expansion: a gzip stream of n bytes inflates to at most about 1032 n */
#define GZIP_MAX_RATIO 1032u

/* Reads exactly len bytes; VR_ERR_FORMAT for a short read (truncated file or gzip stream). */
static vr_status read_exact(gzFile f, const char *path, void *buf, size_t len, const char *what)
{
    size_t got = 0;
    while (got < len) {
        unsigned chunk = len - got > (1u << 30) ? 1u << 30 : (unsigned)(len - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r < 0) {
            int errnum;
            const char *msg = gzerror(f, &errnum);
            if (errnum == Z_BUF_ERROR) /* zlib's word for a gzip stream that stops early */
                return vr_fail(VR_ERR_FORMAT, "idx", "%s: truncated: the gzip stream ends inside the %s",
                               path, what);
            return vr_fail(errnum == Z_ERRNO ? VR_ERR_IO : VR_ERR_FORMAT, "idx",
                           "%s: reading the %s: %s", path, what,
                           errnum == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < len)
        return vr_fail(VR_ERR_FORMAT, "idx", "%s: truncated: the %s needs %zu bytes, the file holds %zu",
                       path, what, len, got);
    return VR_OK;
}

/* Reads and checks the magic and the sizes; returns the element count in *total. */
static vr_status read_header(gzFile f, const char *path, int rank, int64_t *dims, uint64_t *total)
{
    unsigned char magic[4], raw[4 * 3];
    VR_TRY(read_exact(f, path, magic, 4, "magic number"));
    if (magic[0] != 0 || magic[1] != 0)
        return vr_fail(VR_ERR_FORMAT, "idx",
                       "%s: wrong magic %02x %02x %02x %02x: not an IDX file (want 00 00 08 %02x)",
                       path, magic[0], magic[1], magic[2], magic[3], rank);
    if (magic[2] != IDX_TYPE_U8)
        return vr_fail(VR_ERR_FORMAT, "idx", "%s: element type 0x%02x, only unsigned bytes (0x08) are read",
                       path, magic[2]);
    if (magic[3] != rank)
        return vr_fail(VR_ERR_FORMAT, "idx", "%s: %d dimensions, expected %d (%s)", path, magic[3],
                       rank, rank == 1 ? "labels" : "images");
    VR_TRY(read_exact(f, path, raw, 4 * (size_t)rank, "dimension sizes"));
    *total = 1;
    for (int i = 0; i < rank; i++) {
        const unsigned char *b = raw + 4 * i;
        uint32_t v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        if (v == 0 || v > INT32_MAX)
            return vr_fail(VR_ERR_FORMAT, "idx", "%s: dimension %d has size %u", path, i, v);
        dims[i] = v;
        *total *= v;
        if (*total > IDX_MAX_BYTES)
            return vr_fail(VR_ERR_FORMAT, "idx", "%s: sizes promise more than %llu bytes", path,
                           (unsigned long long)IDX_MAX_BYTES);
    }
    return VR_OK;
}

static vr_status read_body(gzFile f, const char *path, int rank, int64_t *dims, uint8_t **data)
{
    uint64_t total;
    VR_TRY(read_header(f, path, rank, dims, &total));
    /* sizes the file cannot hold are refused before the allocation they would ask for */
    struct stat st;
    if (stat(path, &st) == 0) {
        uint64_t bytes = (uint64_t)st.st_size, head = 4 + 4 * (uint64_t)rank;
        int plain = gzdirect(f);
        if (plain && total + head > bytes)
            return vr_fail(VR_ERR_FORMAT, "idx", "%s: truncated: the sizes promise %llu data bytes, the file holds %llu",
                           path, (unsigned long long)total, (unsigned long long)(bytes - head));
        if (!plain && total > GZIP_MAX_RATIO * bytes)
            return vr_fail(VR_ERR_FORMAT, "idx", "%s: the sizes promise %llu data bytes, more than a gzip file "
                           "of %llu bytes can hold", path, (unsigned long long)total, (unsigned long long)bytes);
    }
    *data = vr_alloc((size_t)total);
    if (!*data) return vr_fail(VR_ERR_NOMEM, "idx", "%s: cannot allocate %llu bytes", path,
                               (unsigned long long)total);
    VR_TRY(read_exact(f, path, *data, (size_t)total, "data"));
    /* a body longer than the sizes say means the header lies about the layout */
    unsigned char extra;
    int r = gzread(f, &extra, 1);
    if (r != 0)
        return vr_fail(VR_ERR_FORMAT, "idx", "%s: %s after the %llu data bytes the sizes promise",
                       path, r > 0 ? "extra bytes" : "a read error", (unsigned long long)total);
    return VR_OK;
}

static vr_status open_checked(const char *path, int rank, gzFile *f)
{
    if (rank < 1 || rank > 3) return vr_fail(VR_ERR_ARG, "idx", "%s: rank %d (1..3 supported)", path, rank);
    *f = gzopen(path, "rb");
    if (!*f) return vr_fail(VR_ERR_IO, "idx", "%s: cannot open: %s", path, strerror(errno));
    return VR_OK;
}

vr_status vr_idx_read_dims(const char *path, int rank, int64_t *dims)
{
    gzFile f;
    VR_TRY(open_checked(path, rank, &f));
    uint64_t total;
    vr_status s = read_header(f, path, rank, dims, &total);
    gzclose(f);
    return s;
}

vr_status vr_idx_read(const char *path, int rank, int64_t *dims, uint8_t **data)
{
    *data = NULL;
    gzFile f;
    VR_TRY(open_checked(path, rank, &f));
    vr_status s = read_body(f, path, rank, dims, data);
    gzclose(f);
    if (s != VR_OK) {
        vr_free(*data);
        *data = NULL;
    }
    return s;
}

vr_status vr_gray_dataset_load(const char *images_path, const char *labels_path, int limit,
                               vr_gray_dataset *ds)
{
    memset(ds, 0, sizeof *ds);
    int64_t idims[3], ldims[1];
    vr_status s = vr_idx_read(images_path, 3, idims, &ds->images);
    if (s == VR_OK) s = vr_idx_read(labels_path, 1, ldims, &ds->labels);
    if (s == VR_OK && idims[0] != ldims[0])
        s = vr_fail(VR_ERR_FORMAT, "idx", "%s holds %lld labels but %s holds %lld images",
                    labels_path, (long long)ldims[0], images_path, (long long)idims[0]);
    if (s != VR_OK) {
        vr_gray_dataset_free(ds);
        return s;
    }
    ds->n = (int)idims[0];
    if (limit > 0 && limit < ds->n) ds->n = limit;
    ds->h = (int)idims[1];
    ds->w = (int)idims[2];
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] + 1 > ds->nclasses) ds->nclasses = ds->labels[i] + 1;
    return VR_OK;
}

void vr_gray_dataset_free(vr_gray_dataset *ds)
{
    vr_free(ds->images);
    vr_free(ds->labels);
    memset(ds, 0, sizeof *ds);
}
