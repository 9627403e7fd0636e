// tbevents.h: TensorBoard event files written without TensorFlow: TFRecord framing (length,
// masked CRC-32C of the length, payload, masked CRC-32C of the payload) around Event protobufs
// encoded by hand (wall_time, step, file_version, and Summary.Value{tag, simple_value}).
#ifndef SBMT_TBEVENTS_H
#define SBMT_TBEVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *f;             // NULL: closed (or never opened)
    char path[4608];     // DIR/tb/events.out.tfevents.<unix time>.<host>.<pid>.sbmt
} tb_writer;

typedef struct {
    const char *tag;     // e.g. "train/loss", "density/layer0/head1"
    double value;        // stored as float32 (TensorBoard's simple_value)
} tb_scalar;

// Opens the event stream of the run in run_dir (creating run_dir/tb). A resumed run (resume
// set, resuming at start_step) first cuts every event file there back to the records of steps
// <= start_step, dropping a torn tail a killed process left, and then appends to the newest,
// so the curves read as one run; otherwise a new file is started. 0, or -1 with err set.
int tb_open(tb_writer *w, const char *run_dir, int resume, int64_t start_step, char *err);
// One Event at `step` with n scalars, flushed to the file. 0, or -1 with err set.
int tb_write(tb_writer *w, int64_t step, const tb_scalar *v, int n, char *err);
void tb_close(tb_writer *w);

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) and TFRecord's masked form of it.
uint32_t tb_crc32c(const void *data, size_t n);
uint32_t tb_masked_crc32c(const void *data, size_t n);

// Walks the records of an event file in order, stopping at the end or at the first record
// whose framing or CRCs are wrong (*torn = 1 then, 0 at a clean end). For each valid record
// calls fn (if not NULL) with its payload and its Event step (0 when absent); fn returning
// non-zero stops the walk. Returns the number of valid records, or -1 (err set) when the file
// cannot be read.
typedef int (*tb_record_fn)(const uint8_t *data, size_t len, int64_t step, void *ctx);
int64_t tb_read_records(const char *path, tb_record_fn fn, void *ctx, int *torn, char *err);

#endif
