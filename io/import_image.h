// import_image.h: converters of the two Long Range Arena image tasks' public source files to sbmt
// HDF5 datasets (SPEC.md section 6): "image" (CIFAR-10, binary version, made grayscale) and
// "pathfinder32" (the PNGs and metadata of the LRA release). Both stream rows to the writer in
// blocks, so no split is ever held in memory as int32.
//
// Token ids: pixel intensity + 1 (0..255 -> 1..256; 0 stays the padding id and is never produced
// here, every image filling all 1024 positions), so the dataset's vocab_size is 257.
// SPEC.md section 4 lists vocab 512 for these tasks: that is the reference model's embedding
// size; a model's data.vocab_size may exceed the dataset's, so 257 is recorded here.
#ifndef SBMT_IMPORT_IMAGE_H
#define SBMT_IMPORT_IMAGE_H

#include <stdint.h>

#include "io/dataset.h"

#define IMG_SIDE 32
#define IMG_SEQ_LEN (IMG_SIDE * IMG_SIDE)  // 1024 pixels, row-major
#define IMG_VOCAB 257                      // pad + 256 intensities
#define IMG_CIFAR_CLASSES 10
#define IMG_PATHFINDER_CLASSES 2
#define IMG_CIFAR_RECORD (1 + 3 * IMG_SEQ_LEN)  // 3073 bytes: label, then R, G, B planes
#define IMG_CIFAR_DEFAULT_DEV 5000

typedef struct {
    int64_t rows[SPLIT_COUNT];  // rows written per split
    double seconds;
} img_import_stats;

// ITU-R BT.601 luma: round(0.299 R + 0.587 G + 0.114 B), ties rounded up, computed exactly in
// integers as (299 R + 587 G + 114 B + 500) / 1000 (always within 0..255).
int img_gray601(int r, int g, int b);

// Reads one 32x32 image as 8-bit gray into px[1024] (row-major). Accepts 8-bit gray, 1/2/4-bit
// gray (scaled to 0..255 by libpng), and 8-bit palette or RGB images whose every pixel has
// R == G == B. Rejects other sizes, 16-bit samples, alpha channels and coloured pixels.
// Returns 0, or -1 with "<path>: <problem>" in err.
int img_read_png_gray32(const char *path, uint8_t *px, char *err);

// CIFAR-10 binary version: in_dir holds data_batch_1.bin .. data_batch_5.bin and test_batch.bin,
// each a sequence of 3073-byte records (label 0..9, then 1024 red, 1024 green, 1024 blue bytes,
// row-major 32x32). Train = the training batches in order 1..5 minus their last `dev` records,
// which form dev (LRA: 45000/5000); test = test_batch.bin. Pixels become gray by img_gray601.
// task "image", 10 classes, seq_len 1024. progress != 0 prints progress lines to stderr.
int img_import_cifar10(const char *in_dir, const char *out_path, int64_t dev, int progress,
                       img_import_stats *st, char *err);

// The LRA release directory name of a pathfinder difficulty ("easy" -> "curv_baseline",
// "medium" or "intermediate" -> "curv_contour_length_9", "hard" -> "curv_contour_length_14"),
// or NULL when unknown.
const char *img_pathfinder_dir(const char *difficulty);

// Pathfinder32: reads every in_dir/subdir/metadata/*.npy (text despite the name, files sorted by
// their numeric stem), whose lines hold whitespace-separated fields: [0] image directory
// ("imgs/<k>"), [1] file name ("sample_<n>.png"), [3] label 0/1 (as the LRA loader,
// lra_benchmarks/data/pathfinder.py, reads them); blank lines are skipped. The records, in file
// then line order, are split 80/10/10 %: train = the first round(0.8 N), dev up to round(0.9 N),
// test the rest. Images are read by img_read_png_gray32. task "pathfinder32", 2 classes.
// subdir may be "" or "." to use in_dir itself as the difficulty directory.
int img_import_pathfinder(const char *in_dir, const char *subdir, const char *out_path,
                          int progress, img_import_stats *st, char *err);

#endif
