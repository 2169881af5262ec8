/* The thread-local error message behind vr_status. */
#include "vicreg/status.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char vr_msg[1024];

const char *vr_status_str(vr_status s)
{
    switch (s) {
    case VR_OK: return "ok";
    case VR_ERR_NOMEM: return "out of memory";
    case VR_ERR_IO: return "input/output error";
    case VR_ERR_FORMAT: return "malformed file";
    case VR_ERR_SHAPE: return "shape mismatch";
    case VR_ERR_ARG: return "invalid argument";
    case VR_ERR_UNSUPPORTED: return "unsupported";
    case VR_ERR_NUMERIC: return "non-finite value";
    case VR_ERR_DEVICE: return "device error";
    case VR_ERR_NOT_FOUND: return "not found";
    case VR_ERR_COMM: return "communication failure";
    }
    return "unknown status";
}

const char *vr_last_error(void) { return vr_msg; }

void vr_clear_error(void) { vr_msg[0] = '\0'; }

vr_status vr_fail(vr_status s, const char *domain, const char *fmt, ...)
{
    int n = snprintf(vr_msg, sizeof vr_msg, "%s: ", domain ? domain : "vicreg");
    if (n < 0 || (size_t)n >= sizeof vr_msg) return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vr_msg + n, sizeof vr_msg - (size_t)n, fmt, ap);
    va_end(ap);
    return s;
}
