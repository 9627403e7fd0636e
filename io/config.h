// config.h: the run configuration (INI sections [model], [data], [train]) and its parser.
// Every key lives in one table (config.c) with its type and valid range, so the parser, the
// `--set section.key=value` overrides, validation and the resolved-config text stored in
// checkpoints can never disagree about what a key is.
#ifndef SBMT_CONFIG_H
#define SBMT_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define CFG_STR 256

typedef struct {
    // [model]
    char attention[16];     // softmax | sbm
    int d_model;            // D
    int d_ff;               // Dh (FFN hidden and classifier hidden)
    int heads;              // H
    int head_dim;           // d
    int layers;             // L
    int clusters;           // k (sbm)
    float dropout;          // residual/embedding/FFN dropout
    float attn_dropout;     // dropout on attention probabilities
    char pooling[8];        // mean | cls
    float edge_floor;       // eps of SPEC section 2 (sbm)
    float sparsity_weight;  // density regulariser (sbm)
    char sampler[16];       // fastrg | dense | auto (sbm)
    // [data]
    char task[32];          // listops, text, retrieval, image, pathfinder
    char path[CFG_STR];     // HDF5 dataset; empty: generate (listops) under the run directory
    int seq_len;            // n (must match the dataset)
    int vocab_size;         // 0: take from the dataset
    int num_classes;        // 0: take from the dataset
    int dual;               // dual encoder (pairs of documents): set from the dataset
    int gen_train, gen_dev, gen_test;  // sizes when the dataset is generated
    int gen_min_len, gen_max_len;      // ListOps length bounds when generated
    // [train]
    int batch_size;         // global batch
    int steps;              // total optimizer steps
    int warmup;             // linear warmup steps of the one-cycle schedule
    float lr;               // peak learning rate
    float weight_decay;
    float beta1, beta2, adam_eps;
    int cycle_momentum;     // OneCycleLR beta1 cycling 0.95 -> 0.85 -> 0.95
    float grad_clip;        // global-norm clip; 0 = off
    int eval_every;         // dev evaluation period in steps; 0 = only at the end
    int eval_batches;       // batches per dev evaluation; 0 = the whole split
    int log_every;          // progress line period in steps
    int checkpoint_every;   // checkpoint period in steps; 0 = only at the end
    int keep_checkpoints;   // newest checkpoints kept in the run directory
    uint64_t seed;
    char backend[8];        // cpu | cuda
    char precision[8];      // fp32 | bf16 (GEMM operands; cuda only)
    int micro_batch;        // examples per forward/backward; 0 = the whole per-rank batch
    int tensorboard;        // write DIR/tb/events.out.tfevents.* (rank 0)
    // [dist]
    int tp;                 // head-parallel ranks; dp = world / tp
    int grad_buckets;       // overlap the dp gradient all-reduce with backward, per layer
    int balance;            // rebalance each step's examples over dp by their token counts
} sbmt_config;

// Fills defaults (the reference listops settings of SPEC.md section 4).
void config_defaults(sbmt_config *c);
// Reads an INI file over the current values. Unknown sections/keys, malformed values and
// out-of-range values fail naming file, line, key and the reason.
int config_load_file(sbmt_config *c, const char *path, char *err);
// Applies one "section.key=value" override (from --set).
int config_set(sbmt_config *c, const char *assignment, char *err);
// Cross-key consistency checks run once all sources are applied.
int config_validate(const sbmt_config *c, char *err);
// Writes the fully resolved configuration as INI text (stored in checkpoints).
void config_write(const sbmt_config *c, FILE *f);
// The same into a malloc'd string.
char *config_to_string(const sbmt_config *c);
// Parses INI text (e.g. from a checkpoint) into c, starting from defaults.
int config_load_string(sbmt_config *c, const char *text, const char *origin, char *err);

#endif
