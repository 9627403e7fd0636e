// pointwise.h: per-element and per-row formulas both backends compute (host/device, like
// philox.h): GELU and its derivative, the AdamW update of one value, and the softmax
// cross-entropy of one row (in double, as both backends report it), so CPU and CUDA cannot
// drift apart on the math itself.
#ifndef SBMT_POINTWISE_H
#define SBMT_POINTWISE_H

#include <math.h>
#include <stdint.h>

#include "kernels/philox.h"  // SBMT_HD

SBMT_HD float pw_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118f)); }

SBMT_HD float pw_gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118f));
    float pdf = 0.3989422804f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

// One AdamW step of value i; step = lr / bc1, sbc2 = sqrt(bc2), decay = 1 - lr wd.
SBMT_HD void pw_adamw(float *param, float g, float *m, float *v, float beta1, float beta2,
                      float eps, float step, float sbc2, float decay) {
    *m = beta1 * *m + (1.0f - beta1) * g;
    *v = beta2 * *v + (1.0f - beta2) * g * g;
    *param = *param * decay - step * *m / (sqrtf(*v) / sbc2 + eps);
}

// Softmax of one row of C logits into p; returns the row's cross-entropy for `label` and sets
// *hit when the first maximum is the label.
SBMT_HD double pw_xent_row(float *p, const float *l, int C, int label, int *hit) {
    int arg = 0;
    float mx = l[0];
    for (int c = 1; c < C; c++)
        if (l[c] > mx) mx = l[c], arg = c;
    double sum = 0.0;
    for (int c = 0; c < C; c++) sum += exp((double)l[c] - mx);
    for (int c = 0; c < C; c++) p[c] = (float)(exp((double)l[c] - mx) / sum);
    *hit = arg == label;
    return log(sum) + mx - l[label];
}

#endif
