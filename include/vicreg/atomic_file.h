/* Files that appear whole or not at all: written to PATH.tmp.PID, flushed and fsync'd, then
 * renamed over PATH and the directory entry synced. A kill or a full disk at any moment leaves
 * either the previous file or the new one at PATH, never half of one; a failed write removes
 * its temporary file. Every step is checked: a full disk often shows only at fflush, fsync or
 * fclose. */
#ifndef VICREG_ATOMIC_FILE_H
#define VICREG_ATOMIC_FILE_H

#include <stdio.h>

#include "vicreg/status.h"

typedef struct vr_atomic_file {
    FILE *f;     /* write through this */
    char *path;  /* the destination */
    char *tmp;   /* the temporary file */
    const char *domain;
} vr_atomic_file;

/* Creates the temporary file; errors name `domain` and path. */
vr_status vr_atomic_open(vr_atomic_file *a, const char *path, const char *domain);
/* Flushes, syncs, closes and renames; on any failure removes the temporary file. Either way
 * the handle is released. */
vr_status vr_atomic_commit(vr_atomic_file *a);
/* The two halves of vr_atomic_commit, for several files that must all change or none: finish
 * every one (the temporary file whole on disk; on failure it is removed and the handle
 * released), and only when all finished, publish them (rename; releases the handle). */
vr_status vr_atomic_finish(vr_atomic_file *a);
vr_status vr_atomic_publish(vr_atomic_file *a);
/* Abandons the write: closes and removes the temporary file. */
void vr_atomic_abort(vr_atomic_file *a);

#endif
