/* NumPy .npy reading and writing (see npy.h). */
#include "vicreg/npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vicreg/atomic_file.h"
#include "vicreg/tensor.h"

#define NPY_DOMAIN "npy"
#define MAX_HEADER 65536

vr_status vr_npy_fwrite(FILE *f, const char *path, const float *data, int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim > VR_NPY_MAX_DIMS)
        return vr_fail(VR_ERR_ARG, NPY_DOMAIN, "%s: rank %d outside 1..%d", path, ndim, VR_NPY_MAX_DIMS);
    char dict[512];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return vr_fail(VR_ERR_ARG, NPY_DOMAIN, "%s: negative size %lld", path, (long long)shape[i]);
        count *= shape[i];
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld,%s", (long long)shape[i],
                        i + 1 < ndim ? " " : "");
    }
    if (ndim > 1) len--; /* (3, 4) but (3,) */
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    /* magic 6 + version 2 + length 2 + dict + padding + '\n' = a multiple of 64 */
    int total = (10 + len + 1 + 63) / 64 * 64, pad = total - 10 - len - 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)((total - 10) & 0xff),
                             (unsigned char)((total - 10) >> 8)};
    fwrite(pre, 1, sizeof pre, f);
    fwrite(dict, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    if (count) fwrite(data, sizeof(float), (size_t)count, f);
    return VR_OK;
}

vr_status vr_npy_write(const char *path, const float *data, int ndim, const int64_t *shape)
{
    vr_atomic_file a;
    VR_TRY(vr_atomic_open(&a, path, NPY_DOMAIN));
    vr_status s = vr_npy_fwrite(a.f, path, data, ndim, shape);
    if (s != VR_OK) {
        vr_atomic_abort(&a);
        return s;
    }
    return vr_atomic_commit(&a);
}

/* The value of 'key' in the header dict: a pointer just past "'key':" and spaces. */
static const char *dict_value(const char *dict, const char *key)
{
    char quoted[32];
    snprintf(quoted, sizeof quoted, "'%s'", key);
    const char *p = strstr(dict, quoted);
    if (!p) return NULL;
    p += strlen(quoted);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

static vr_status parse_header(const char *path, const char *dict, vr_npy *out)
{
    const char *d = dict_value(dict, "descr"), *f = dict_value(dict, "fortran_order"),
               *s = dict_value(dict, "shape");
    if (!d || !f || !s || *d != '\'' || *s != '(')
        return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: header lacks descr, fortran_order or shape: %.120s", path, dict);
    const char *end = strchr(d + 1, '\'');
    if (!end) return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: malformed descr in header", path);
    int dlen = (int)(end - d - 1);
    if (!(dlen == 3 && (!strncmp(d + 1, "<f4", 3) || !strncmp(d + 1, "=f4", 3))))
        return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: dtype '%.*s', expected little-endian float32 ('<f4')", path,
                       dlen < 32 ? dlen : 32, d + 1);
    if (strncmp(f, "False", 5) != 0)
        return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: Fortran-ordered data, expected C order", path);
    const char *p = s + 1;
    out->ndim = 0;
    out->count = 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == ')') break;
        if (!isdigit((unsigned char)*p)) return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: malformed shape in header", path);
        if (out->ndim == VR_NPY_MAX_DIMS)
            return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: more than %d dimensions", path, VR_NPY_MAX_DIMS);
        char *e;
        errno = 0;
        long long v = strtoll(p, &e, 10);
        if (errno || v < 0 || v > ((int64_t)1 << 40) || (v && out->count > ((int64_t)1 << 40) / v))
            return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: shape too large", path);
        out->shape[out->ndim++] = v;
        out->count *= v;
        p = e;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p != ')') return vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: malformed shape in header", path);
    }
    return VR_OK;
}

vr_status vr_npy_read(const char *path, int ndim, vr_npy *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return vr_fail(errno == ENOENT ? VR_ERR_NOT_FOUND : VR_ERR_IO, NPY_DOMAIN, "%s: cannot open: %s", path,
                           strerror(errno));
    unsigned char pre[12];
    vr_status s = VR_OK;
    char *dict = NULL;
    size_t hlen = 0;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        s = vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: not a .npy file (no \\x93NUMPY magic)", path);
    } else if (pre[6] == 1) {
        hlen = pre[8] | (size_t)pre[9] << 8;
    } else if ((pre[6] == 2 || pre[6] == 3) && fread(pre + 10, 1, 2, f) == 2) {
        hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    } else {
        s = vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: unsupported .npy version %d.%d", path, pre[6], pre[7]);
    }
    if (s == VR_OK && (hlen == 0 || hlen > MAX_HEADER))
        s = vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: header length %zu outside 1..%d", path, hlen, MAX_HEADER);
    if (s == VR_OK && !(dict = malloc(hlen + 1))) s = vr_fail(VR_ERR_NOMEM, NPY_DOMAIN, "%s: out of memory", path);
    if (s == VR_OK && fread(dict, 1, hlen, f) != hlen)
        s = vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: truncated header", path);
    if (s == VR_OK) {
        dict[hlen] = '\0';
        s = parse_header(path, dict, out);
    }
    if (s == VR_OK && ndim > 0 && out->ndim != ndim)
        s = vr_fail(VR_ERR_SHAPE, NPY_DOMAIN, "%s: rank %d, expected %d", path, out->ndim, ndim);
    if (s == VR_OK) {
        long here = ftell(f);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, here, SEEK_SET);
        int64_t want = out->count * (int64_t)sizeof(float);
        if (size - here != want)
            s = vr_fail(VR_ERR_FORMAT, NPY_DOMAIN, "%s: %s: %ld data bytes for a shape of %lld floats (%lld bytes)", path,
                        size - here < want ? "truncated" : "trailing bytes", size - here, (long long)out->count,
                        (long long)want);
    }
    if (s == VR_OK && !(out->data = vr_alloc((size_t)(out->count ? out->count : 1) * sizeof(float))))
        s = vr_fail(VR_ERR_NOMEM, NPY_DOMAIN, "%s: cannot hold %lld floats", path, (long long)out->count);
    if (s == VR_OK && out->count && fread(out->data, sizeof(float), (size_t)out->count, f) != (size_t)out->count)
        s = vr_fail(VR_ERR_IO, NPY_DOMAIN, "%s: read failed", path);
    free(dict);
    fclose(f);
    if (s != VR_OK) vr_npy_free(out);
    return s;
}

void vr_npy_free(vr_npy *a)
{
    vr_free(a->data);
    memset(a, 0, sizeof *a);
}
