/* The fuzz input as a file, for readers that take a path: the bytes are written to a memory
 * file (memfd_create) and read back through its /proc/self/fd path, rewritten for every input,
 * so nothing touches the disk. Any failure to set it up aborts: it is the harness, not the
 * reader, that broke. */
#ifndef VR_FUZZ_FILE_H
#define VR_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct fuzz_file {
    int fd; /* 0 until the first put */
    char path[48];
} fuzz_file;

/* Replaces the file's contents with data (size bytes); returns its path. */
static inline const char *fuzz_file_put(fuzz_file *f, const void *data, size_t size)
{
    if (f->fd <= 0) {
        f->fd = memfd_create("vr_fuzz", MFD_CLOEXEC);
        if (f->fd < 0) abort();
        snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    }
    if (ftruncate(f->fd, 0) != 0) abort();
    const uint8_t *p = data;
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(f->fd, p + done, size - done, (off_t)done);
        if (n <= 0) abort();
        done += (size_t)n;
    }
    return f->path;
}

#endif
