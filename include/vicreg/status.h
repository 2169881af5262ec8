/* Status codes and the thread-local error message of the vicreg library.
 *
 * Two tiers, as in ggml: VR_ASSERT aborts with file:line on a broken invariant (a bug in the
 * caller or in the library); a vr_status is returned for everything that can fail at run time
 * (files, memory, shapes from outside). A failing function leaves a message naming the domain
 * and the object, e.g. "safetensors: model.st: header length 9999999999 exceeds file size 812".
 * Library code never prints and never exits. */
#ifndef VICREG_STATUS_H
#define VICREG_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum vr_status {
    VR_OK = 0,
    VR_ERR_NOMEM,       /* an allocation failed */
    VR_ERR_IO,          /* open/read/write/rename of a file failed */
    VR_ERR_FORMAT,      /* a file's contents are malformed */
    VR_ERR_SHAPE,       /* shapes or sizes do not fit together */
    VR_ERR_ARG,         /* a bad argument or option value */
    VR_ERR_UNSUPPORTED, /* valid request this build or backend cannot do */
    VR_ERR_NUMERIC,     /* NaN or Inf where a finite number is required */
    VR_ERR_DEVICE,      /* a device (GPU) call failed or no device is present */
    VR_ERR_NOT_FOUND,   /* a named object (tensor, key, file) is missing */
    VR_ERR_COMM         /* a collective failed or timed out: another process died or hangs */
} vr_status;

/* "ok", "out of memory", ... */
const char *vr_status_str(vr_status s);

/* The message of the last failing call on this thread ("" if none). */
const char *vr_last_error(void);

/* Records "domain: message" for this thread and returns s, so callers write
 *   return vr_fail(VR_ERR_FORMAT, "safetensors", "%s: truncated header", path); */
vr_status vr_fail(vr_status s, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears this thread's message. */
void vr_clear_error(void);

#define VR_ASSERT(cond)                                                                     \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: internal error: assertion '%s' failed\n", __FILE__,     \
                    __LINE__, #cond);                                                       \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* Propagates a failing status: VR_TRY(vr_foo(...)); */
#define VR_TRY(expr)                                                                        \
    do {                                                                                    \
        vr_status vr_try_s_ = (expr);                                                       \
        if (vr_try_s_ != VR_OK) return vr_try_s_;                                           \
    } while (0)

#endif
