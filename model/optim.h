// optim.h: AdamW over the flat parameter buffer and the one-cycle schedule of SPEC.md section 4
// (PyTorch OneCycleLR, linear annealing, optional beta1 cycling).
#ifndef SBMT_OPTIM_H
#define SBMT_OPTIM_H

#include "kernels/kernels.h"
#include "model/model.h"

typedef struct {
    float max_lr;
    int total_steps, warmup_steps;
    int cycle_momentum;
    float base_beta1;  // used when cycle_momentum == 0
} onecycle;

// Learning rate and beta1 for optimizer step `step` (0-based: the first update uses step 0).
void onecycle_at(const onecycle *s, int step, float *lr, float *beta1);

// Global L2 norm of the gradients; if clip > 0 and the norm exceeds it, scales them down.
double optim_clip(kctx *k, model *m, float clip);

// One AdamW update (step is 1-based for bias correction) of every tensor; weight decay only on
// tensors whose table entry has decay set (matrices), as is usual for Transformers.
void optim_adamw(kctx *k, model *m, int step, float lr, float beta1, float beta2, float eps,
                 float wd);

#endif
