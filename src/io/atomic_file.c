/* Whole-or-nothing file writes (see atomic_file.h). */
#include "vicreg/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

vr_status vr_atomic_open(vr_atomic_file *a, const char *path, const char *domain)
{
    memset(a, 0, sizeof *a);
    a->domain = domain;
    size_t len = strlen(path) + 32;
    a->path = strdup(path);
    a->tmp = malloc(len);
    if (!a->path || !a->tmp) {
        vr_atomic_abort(a);
        return vr_fail(VR_ERR_NOMEM, domain, "%s: out of memory", path);
    }
    /* the pid keeps two processes writing the same path from sharing a temporary file */
    snprintf(a->tmp, len, "%s.tmp.%ld", path, (long)getpid());
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        vr_status s = vr_fail(VR_ERR_IO, domain, "%s: cannot create temporary file %s: %s", path, a->tmp,
                              strerror(errno));
        vr_atomic_abort(a);
        return s;
    }
    return VR_OK;
}

/* Makes a completed rename durable: the new directory entry reaches the disk with the file.
 * Best effort: a directory that cannot be opened for reading (rare) leaves the rename as it is. */
static void sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

vr_status vr_atomic_finish(vr_atomic_file *a)
{
    int ok = !ferror(a->f) && fflush(a->f) == 0 && fsync(fileno(a->f)) == 0;
    int err = ok ? 0 : (errno ? errno : EIO);
    if (fclose(a->f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    a->f = NULL;
    if (ok) return VR_OK;
    vr_status s = vr_fail(VR_ERR_IO, a->domain, "%s: cannot write temporary file %s: %s", a->path, a->tmp,
                          strerror(err));
    vr_atomic_abort(a);
    return s;
}

vr_status vr_atomic_publish(vr_atomic_file *a)
{
    vr_status s = VR_OK;
    if (rename(a->tmp, a->path) != 0) {
        s = vr_fail(VR_ERR_IO, a->domain, "%s: cannot rename %s over it: %s", a->path, a->tmp, strerror(errno));
    } else {
        sync_parent(a->path);
        free(a->tmp);
        a->tmp = NULL;
    }
    vr_atomic_abort(a);
    return s;
}

vr_status vr_atomic_commit(vr_atomic_file *a)
{
    VR_TRY(vr_atomic_finish(a));
    return vr_atomic_publish(a);
}

void vr_atomic_abort(vr_atomic_file *a)
{
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    memset(a, 0, sizeof *a);
}
