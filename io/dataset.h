// dataset.h: sbmt HDF5 datasets (SPEC.md section 6): writing, validated opening, and row reads
// as hyperslabs so that no caller ever holds a whole split in memory.
#ifndef SBMT_DATASET_H
#define SBMT_DATASET_H

#include <stdint.h>

#include <hdf5.h>

enum { SPLIT_TRAIN = 0, SPLIT_DEV = 1, SPLIT_TEST = 2, SPLIT_COUNT = 3 };
extern const char *const split_names[SPLIT_COUNT];  // "train", "dev", "test"
// Returns the split id for a name ("val"/"validation" accepted for dev), or -1.
int split_from_name(const char *name);

typedef struct {
    char path[4096];
    char task[64];
    int vocab_size, num_classes, seq_len, dual;
    int64_t rows[SPLIT_COUNT];  // -1 when the split is absent
    hid_t file;
    hid_t ids[SPLIT_COUNT], ids1[SPLIT_COUNT], labels[SPLIT_COUNT];  // open datasets or -1
} ds_file;

// Opens and validates a dataset file: sbmt_format/version, root attributes, every present
// split's datasets (rank, shape, integer dtype, matching row counts). Value ranges are checked
// on every read. On failure returns -1 with a message naming the file, the object and the problem.
int ds_open(ds_file *ds, const char *path, char *err);
void ds_close(ds_file *ds);

// Reads `count` rows given by `rows` (sorted or not, any subset) of a split into
// ids [count, seq_len], ids1 [count, seq_len] (dual only, else may be NULL) and labels [count].
// Validates 0 <= id < vocab_size and 0 <= label < num_classes, naming the row on failure.
int ds_read_rows(ds_file *ds, int split, const int64_t *rows, int count, int32_t *ids,
                 int32_t *ids1, int32_t *labels, char *err);

// Writer: creates the file with root attributes and the /vocab string dataset (may be NULL).
typedef struct {
    hid_t file;
    char path[4096];
    int seq_len, dual, vocab_size;
    int num_classes;
    // The split being streamed by ds_writer_split_begin/_rows/_end (cur_split -1 when none).
    int cur_split;
    int64_t cur_rows, cur_written;
    hid_t cur_ids, cur_ids1, cur_labels;
    int failed;  // set by any failed writer call; ds_writer_close then discards the file
} ds_writer;
int ds_writer_create(ds_writer *w, const char *path, const char *task, int vocab_size,
                     int num_classes, int seq_len, int dual, const char *const *vocab, char *err);
// Writes one whole split: ids [rows, seq_len] (ids1 for dual), labels [rows]. Chunked + deflate;
// the on-disk integer type is the smallest that holds vocab_size.
int ds_writer_split(ds_writer *w, int split, int64_t rows, const int32_t *ids, const int32_t *ids1,
                    const int32_t *labels, char *err);
// Streaming form of ds_writer_split for splits too large to hold as int32: _begin creates the
// split's datasets for `rows` rows, each _rows call appends the next `count` rows (values are
// range-checked, naming the row), and _end checks that exactly `rows` rows were written.
// One split at a time.
int ds_writer_split_begin(ds_writer *w, int split, int64_t rows, char *err);
int ds_writer_split_rows(ds_writer *w, int64_t count, const int32_t *ids, const int32_t *ids1,
                         const int32_t *labels, char *err);
int ds_writer_split_end(ds_writer *w, char *err);
// Writes a string attribute on the root group (e.g. generator provenance).
int ds_writer_attr_str(ds_writer *w, const char *name, const char *value, char *err);
// The file is written as path + ".tmp" and renamed to path by a successful ds_writer_close, so
// an interrupted or failed write never leaves a plausible-looking dataset under the final name.
// After any failed writer call, close removes the temporary file and returns -1 (its message
// then says only that; the first error was reported by the failing call). A failed
// ds_writer_create leaves nothing to close.
int ds_writer_close(ds_writer *w, char *err);

// Reads a scalar string attribute (fixed- or variable-length, ASCII or UTF-8) of obj into out;
// -1 with err naming path and attribute when it is missing or not a string.
int ds_read_str_attr(const char *path, hid_t obj, const char *name, char *out, size_t outlen,
                     char *err);

#endif
