/* Warm-up + cosine learning rate, as facebookresearch/vicreg main_vicreg.py
 * adjust_learning_rate, computed in double like the reference's Python floats. */
#include "vicreg/schedule.h"

#include <math.h>

/* M_PI is POSIX, not C11 */
static const double pi = 3.14159265358979323846;

float vr_lr_at(const vr_lr_schedule *s, long step)
{
    double base = s->base;
    if (step < 0) step = 0;
    if (step < s->warmup_steps) return (float)(base * (double)step / (double)s->warmup_steps);
    double end = base * (double)s->final_ratio;
    long span = s->total_steps - s->warmup_steps;
    long t = step - s->warmup_steps;
    if (span <= 0 || t >= span) return (float)end;
    double q = 0.5 * (1.0 + cos(pi * (double)t / (double)span));
    return (float)(base * q + end * (1.0 - q));
}

float vr_lr_scaled_base(float base_lr, int global_batch)
{
    return (float)((double)base_lr * (double)global_batch / 256.0);
}
