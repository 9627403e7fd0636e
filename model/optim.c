// optim.c: one-cycle schedule, gradient clipping and AdamW over the parameter table.
#include "model/optim.h"

#include <math.h>

void onecycle_at(const onecycle *s, int step, float *lr, float *beta1) {
    // OneCycleLR: phase 1 ends at pct_start * total - 1 = warmup - 1, phase 2 at total - 1.
    const double initial = s->max_lr / 25.0, final_lr = initial / 1e4;
    const double m_max = 0.95, m_base = 0.85;
    double end1 = (double)s->warmup_steps - 1.0, end2 = (double)s->total_steps - 1.0;
    double r, m;
    if (step <= end1) {
        double pct = end1 > 0 ? step / end1 : 1.0;
        r = initial + pct * (s->max_lr - initial);
        m = m_max + pct * (m_base - m_max);
    } else {
        double pct = end2 > end1 ? (step - end1) / (end2 - end1) : 1.0;
        if (pct > 1.0) pct = 1.0;
        r = s->max_lr + pct * (final_lr - s->max_lr);
        m = m_base + pct * (m_max - m_base);
    }
    *lr = (float)r;
    *beta1 = s->cycle_momentum ? (float)m : s->base_beta1;
}

double optim_clip(kctx *k, model *m, float clip) {
    double norm = sqrt(k_sumsq(k, m->grads, m->nparams));
    if (clip > 0.0f && norm > clip) k_scale(k, m->grads, m->nparams, (float)(clip / (norm + 1e-6)));
    return norm;
}

void optim_adamw(kctx *k, model *m, int step, float lr, float beta1, float beta2, float eps,
                 float wd) {
    // PyTorch uses the current beta1 in the bias correction, also when it is being cycled.
    float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
    for (int i = 0; i < m->table.n; i++) {
        const param_entry *e = &m->table.e[i];
        k_adamw(k, m->params + e->offset, m->grads + e->offset, m->adam_m + e->offset,
                m->adam_v + e->offset, e->numel, lr, beta1, beta2, eps, e->decay ? wd : 0.0f, bc1,
                bc2);
    }
}
