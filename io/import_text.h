// import_text.h: converters from the public Long Range Arena release files ("lra_release") of
// the three text tasks to sbmt datasets (SPEC.md section 6):
//
//   ListOps    DIR/basic_{train,val,test}.tsv, header "Source\tTarget"; Source is the expression
//              with whitespace-separated tokens, "(" and ")" dropped (as LRA's preprocessing
//              does); Target the label 0-9. Ids from listops_symbols (0 = padding), vocab 16,
//              10 classes, task "listops"; val -> dev. A longer expression than seq_len is an
//              error unless truncate is set. /vocab = listops_symbols.
//   Text       the aclImdb layout DIR/{train,test}/{neg,pos}/*.txt (IMDb reviews), labels neg 0,
//              pos 1; byte-level ids: byte b -> b + 1 (0 stays padding), vocab_size 257, 2
//              classes, task "text". Reviews longer than seq_len are cut (the LRA convention) and
//              counted. Within a split neg files come first, then pos, each sorted by name
//              (strcmp); the trainer shuffles rows. LRA has no dev split: dev is a copy of test
//              (25000/25000/25000), or with dev_from_train = N, N reviews taken out of train by a
//              fixed pseudo-random selection (a pure function of the file list and N).
//   Retrieval  DIR/new_aan_pairs.{train,eval,test}.tsv, no header, 5 tab-separated columns
//              label, id1, id2, text1, text2 (label 0 or 1, also written "0.0"/"1.0" since LRA
//              reads it as a float); byte-level ids as for text, text1 -> input_ids, text2 ->
//              input_ids_1, dual 1, vocab 257, 2 classes, task "retrieval"; eval -> dev. Texts
//              longer than seq_len are cut and counted (per text, so up to 2 per row).
//
// For convenience DIR may also be the directory above the LRA one: the listops-1000/, aclImdb/
// and tsv_data/ subdirectories are tried when the files are not in DIR itself.
// Text and retrieval /vocab entries: "<pad>", then the byte itself for printable ASCII
// (0x20..0x7e) and "<0xHH>" for every other byte value.
//
// Every converter first reads all of its input once (counting rows and validating every line,
// so bad input fails before any output exists), then streams the rows to the writer in blocks of
// LRA_IMPORT_BLOCK rows: memory stays at a few blocks of seq_len int32 whatever the split size.
// Blank lines in TSV files are skipped; a trailing "\r" is stripped. Errors return -1 with a
// message naming the input file, the line ("FILE:LINE: ...") and the problem.
#ifndef SBMT_IMPORT_TEXT_H
#define SBMT_IMPORT_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "io/dataset.h"

#define LRA_IMPORT_BLOCK 256
#define LRA_BYTE_VOCAB 257
#define LRA_LISTOPS_SEQ_LEN 2048
#define LRA_TEXT_SEQ_LEN 4096
#define LRA_RETRIEVAL_SEQ_LEN 4096

typedef struct {
    int seq_len;             // padded length; 0 -> the task default above
    int truncate;            // listops: cut longer expressions instead of failing
    int64_t dev_from_train;  // text: 0 -> dev is a copy of test; N > 0 -> N train reviews
    int progress;            // != 0: one line per written split on stderr
} lra_import_opts;

typedef struct {
    int seq_len;                      // the one used
    int64_t rows[SPLIT_COUNT];        // rows written per split
    int64_t truncated[SPLIT_COUNT];   // sequences cut to seq_len per split (retrieval: texts)
    int64_t max_len;                  // longest sequence seen before cutting (tokens / bytes)
    double seconds;
} lra_import_stats;

int lra_import_listops(const char *in_dir, const char *out_path, const lra_import_opts *o,
                       lra_import_stats *st, char *err);
int lra_import_text(const char *in_dir, const char *out_path, const lra_import_opts *o,
                    lra_import_stats *st, char *err);
int lra_import_retrieval(const char *in_dir, const char *out_path, const lra_import_opts *o,
                         lra_import_stats *st, char *err);

// Line parsers (exposed for tests). `line` has no trailing newline and may be modified.
// Each returns 1 when the line gave a row, 0 when it gave none (blank line; for ListOps also the
// "Source\tTarget" header on line 1), -1 on error with err "FILE:LINE: problem".
// ListOps: ids [seq_len] padded with 0, *label in 0..9, *ntok the token count before cutting.
int lra_listops_line(char *line, const char *file, int64_t lineno, int seq_len, int truncate,
                     int32_t *ids, int32_t *label, int64_t *ntok, char *err);
// Retrieval: n is the line length (texts may hold any byte but tab and newline); *ncut the
// number of texts (0..2) cut to seq_len, *maxlen the longer text's byte length.
int lra_retrieval_line(char *line, size_t n, const char *file, int64_t lineno, int seq_len,
                       int32_t *ids, int32_t *ids1, int32_t *label, int *ncut, int64_t *maxlen,
                       char *err);
// Byte-level ids: ids[i] = s[i] + 1 for i < min(n, seq_len), then 0. Returns 1 if n > seq_len.
int lra_byte_ids(const unsigned char *s, size_t n, int seq_len, int32_t *ids);

#endif
