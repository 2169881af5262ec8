/* The learning-rate schedule of facebookresearch/vicreg (main_vicreg.py adjust_learning_rate):
 * linear warm-up from 0, then a half cosine from the base rate down to base * final_ratio,
 * set every step. Steps count optimiser steps from 0. */
#ifndef VICREG_SCHEDULE_H
#define VICREG_SCHEDULE_H

typedef struct vr_lr_schedule {
    float base;         /* peak learning rate, reached at the end of the warm-up */
    long warmup_steps;  /* 10 epochs of steps in the reference; 0: no warm-up */
    long total_steps;   /* epochs * steps per epoch */
    float final_ratio;  /* end rate / base, 0.001 in the reference */
} vr_lr_schedule;

/* step < warmup: base * step / warmup; otherwise with
 * q = 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))):
 * base * q + base * final_ratio * (1 - q). Steps below 0 count as 0; steps at or past the
 * total (and any step after the warm-up when total <= warmup) give the end rate. */
float vr_lr_at(const vr_lr_schedule *s, long step);

/* The reference's linear scaling: base_lr * global_batch / 256. */
float vr_lr_scaled_base(float base_lr, int global_batch);

#endif
