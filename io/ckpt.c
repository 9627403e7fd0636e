// ckpt.c: HDF5 checkpoints (SPEC.md section 6).
//
// Layout: root attributes sbmt_format = "checkpoint", sbmt_version = 1, step (int64), seed
// (uint64) and config (text); every parameter tensor as a float32 dataset /model/<name> with its
// logical shape, and the Adam moments under /optim/adam_m/<name> and /optim/adam_v/<name>.
// Datasets are chunked with the Fletcher32 filter, and the file uses the 1.8+ object format
// (checksummed superblock and object headers), so a flipped bit is reported as an error on read
// rather than silently loaded.
//
// Saving is atomic: the file is assembled in memory (HDF5 core driver; the image and a copy of it,
// about twice the file size, are held briefly), written to path + ".tmp", fsync'd, closed, checked,
// renamed over path, and the directory fsync'd. Any failure removes the temporary file and leaves
// path as it was.
#define _POSIX_C_SOURCE 200809L
#include "io/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/common.h"

#define CKPT_FORMAT "checkpoint"
#define CKPT_VERSION 1
// Largest chunk, in floats (4 MiB): whole tensors up to this size are one chunk.
#define CKPT_CHUNK_ELEMS ((hsize_t)1 << 20)
#define WHY_LEN 256
#define OBJ_LEN (PARAM_NAME_LEN + 32)

// HDF5 reports problems through return values here; its default handler would print stacks.
static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t why_walk(unsigned n, const H5E_error2_t *e, void *data) {
    char *why = data;
    if (n == 0 && e->desc) snprintf(why, WHY_LEN, "%s", e->desc);
    return 0;
}

// The innermost message of the current HDF5 error stack (the system error text when HDF5 quotes
// one, e.g. "No space left on device"), or "unknown HDF5 error".
static const char *h5_why(char *why) {
    why[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, why_walk, why);
    const char *key = "error message = '";
    char *p = strstr(why, key);
    if (p) {
        p += strlen(key);
        char *q = strchr(p, '\'');
        if (q) *q = '\0';
        memmove(why, p, strlen(p) + 1);
    }
    if (!why[0]) snprintf(why, WHY_LEN, "unknown HDF5 error");
    return why;
}

static void close_id(hid_t *id, herr_t (*fn)(hid_t)) {
    if (*id >= 0) fn(*id);
    *id = -1;
}

static void fmt_shape(char *buf, size_t len, int nd, const hsize_t *dims) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < nd && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

// ---------------------------------------------------------------------------------------------
// Attributes

static int write_num_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t space = H5Screate(H5S_SCALAR), a = -1;
    int rc = -1;
    if (space >= 0) a = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, mtype, v) >= 0) rc = 0;
    close_id(&a, H5Aclose);
    close_id(&space, H5Sclose);
    return rc;
}

// Fixed-length, NUL-terminated UTF-8 string. Stored inside the (checksummed) object header, not
// in the global heap that variable-length strings use: HDF5 1.10 can loop forever on a damaged
// global heap, so a corrupted checkpoint could hang instead of failing.
static int write_str_attr(hid_t loc, const char *name, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1), space = -1, a = -1;
    int rc = -1;
    if (type >= 0 && H5Tset_size(type, strlen(value) + 1) >= 0 &&
        H5Tset_strpad(type, H5T_STR_NULLTERM) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0 &&
        (space = H5Screate(H5S_SCALAR)) >= 0 &&
        (a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
        H5Awrite(a, type, value) >= 0)
        rc = 0;
    close_id(&a, H5Aclose);
    close_id(&space, H5Sclose);
    close_id(&type, H5Tclose);
    return rc;
}

// Opens root attribute `name` holding exactly one element of class `cls`. Returns the attribute
// id, or -1 with a message naming file and attribute (missing, wrong type, not scalar).
static hid_t open_attr(hid_t f, const char *file, const char *name, H5T_class_t cls,
                       const char *what, char *err) {
    htri_t ex = H5Aexists(f, name);
    if (ex <= 0) {
        sbmt_errf(err, "%s: missing root attribute %s", file, name);
        return -1;
    }
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) {
        char why[WHY_LEN];
        sbmt_errf(err, "%s: cannot open root attribute %s (%s)", file, name, h5_why(why));
        return -1;
    }
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    int ok = type >= 0 && space >= 0 && H5Tget_class(type) == cls &&
             H5Sget_simple_extent_npoints(space) == 1;
    close_id(&type, H5Tclose);
    close_id(&space, H5Sclose);
    if (!ok) {
        H5Aclose(a);
        sbmt_errf(err, "%s: root attribute %s is not a single %s", file, name, what);
        return -1;
    }
    return a;
}

static int read_int_attr(hid_t f, const char *file, const char *name, hid_t mtype, void *out,
                         char *err) {
    hid_t a = open_attr(f, file, name, H5T_INTEGER, "integer", err);
    if (a < 0) return -1;
    int rc = 0;
    if (H5Aread(a, mtype, out) < 0) {
        char why[WHY_LEN];
        rc = sbmt_errf(err, "%s: cannot read root attribute %s (%s)", file, name, h5_why(why));
    }
    H5Aclose(a);
    return rc;
}

// Reads a fixed- or variable-length string attribute into a malloc'd C string.
static int read_str_attr(hid_t f, const char *file, const char *name, char **out, char *err) {
    *out = NULL;
    hid_t a = open_attr(f, file, name, H5T_STRING, "string", err);
    if (a < 0) return -1;
    hid_t ftype = H5Aget_type(a), mtype = H5Tcopy(H5T_C_S1);
    int rc = -1;
    if (ftype >= 0 && mtype >= 0 && H5Tset_cset(mtype, H5Tget_cset(ftype)) >= 0) {
        if (H5Tis_variable_str(ftype) > 0) {
            char *p = NULL;
            if (H5Tset_size(mtype, H5T_VARIABLE) >= 0 && H5Aread(a, mtype, &p) >= 0) {
                const char *s = p ? p : "";
                *out = xmalloc(strlen(s) + 1);
                strcpy(*out, s);
                if (p) H5free_memory(p);
                rc = 0;
            }
        } else {
            size_t n = H5Tget_size(ftype);
            char *buf = xcalloc(n + 2, 1);
            if (n > 0 && H5Tset_size(mtype, n + 1) >= 0 &&
                H5Tset_strpad(mtype, H5T_STR_NULLTERM) >= 0 && H5Aread(a, mtype, buf) >= 0) {
                *out = buf;
                rc = 0;
            } else {
                free(buf);
            }
        }
    }
    char why[WHY_LEN];
    if (rc < 0) sbmt_errf(err, "%s: cannot read root attribute %s (%s)", file, name, h5_why(why));
    close_id(&mtype, H5Tclose);
    close_id(&ftype, H5Tclose);
    H5Aclose(a);
    return rc;
}

// Opens path read-only and checks sbmt_format and sbmt_version. Returns the file id or -1.
static hid_t open_checked(const char *path, char *err) {
    h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0)
        return sbmt_errf(err, "%s: cannot open checkpoint: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return sbmt_errf(err, "%s: not a regular file", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (f < 0) {
        char why[WHY_LEN];
        sbmt_errf(err, "%s: not a readable HDF5 file, truncated or corrupted? (%s)", path,
                  h5_why(why));
    }
    close_id(&fapl, H5Pclose);  // (after reading the error stack, which any call resets)
    if (f < 0) return -1;
    char *format = NULL;
    if (H5Aexists(f, "sbmt_format") <= 0) {
        H5Fclose(f);
        return sbmt_errf(err, "%s: not an sbmt checkpoint (no sbmt_format attribute on /)", path);
    }
    if (read_str_attr(f, path, "sbmt_format", &format, err) < 0) {
        H5Fclose(f);
        return -1;
    }
    if (strcmp(format, CKPT_FORMAT) != 0) {
        sbmt_errf(err, "%s: not an sbmt checkpoint: sbmt_format is \"%.64s\", expected \"%s\"",
                  path, format, CKPT_FORMAT);
        free(format);
        H5Fclose(f);
        return -1;
    }
    free(format);
    int version = 0;
    if (read_int_attr(f, path, "sbmt_version", H5T_NATIVE_INT, &version, err) < 0) {
        H5Fclose(f);
        return -1;
    }
    if (version != CKPT_VERSION) {
        H5Fclose(f);
        return sbmt_errf(err, "%s: checkpoint sbmt_version %d is not supported (this build reads %d)",
                         path, version, CKPT_VERSION);
    }
    return f;
}

// ---------------------------------------------------------------------------------------------
// Saving

static int write_tree(hid_t f, const char *root, const param_table *t, const float *buf,
                      const char *file, char *err) {
    char why[WHY_LEN], obj[OBJ_LEN];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        close_id(&lcpl, H5Pclose);
        return sbmt_errf(err, "%s: HDF5 property list failure (%s)", file, h5_why(why));
    }
    int rc = 0;
    for (int i = 0; i < t->n && rc == 0; i++) {
        const param_entry *e = &t->e[i];
        snprintf(obj, sizeof obj, "%s/%s", root, e->name);
        hsize_t dims[PARAM_MAX_DIM], chunk[PARAM_MAX_DIM], chunk_elems = 1;
        for (int d = 0; d < e->ndim; d++) {
            dims[d] = chunk[d] = (hsize_t)e->shape[d];
            chunk_elems *= chunk[d];
        }
        // Split along the leading dimensions until a chunk holds at most CKPT_CHUNK_ELEMS.
        for (int d = 0; d < e->ndim && chunk_elems > CKPT_CHUNK_ELEMS; d++) {
            while (chunk_elems > CKPT_CHUNK_ELEMS && chunk[d] > 1) {
                chunk_elems = chunk_elems / chunk[d] * ((chunk[d] + 1) / 2);
                chunk[d] = (chunk[d] + 1) / 2;
            }
        }
        hid_t space = H5Screate_simple(e->ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE),
              ds = -1;
        int ok = space >= 0 && dcpl >= 0;
        if (ok && e->numel > 0)  // chunked (and so checksummed) unless the tensor is empty
            ok = H5Pset_chunk(dcpl, e->ndim, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0;
        if (ok) ok = H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0;
        if (ok) ok = (ds = H5Dcreate2(f, obj, H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT)) >= 0;
        if (!ok) {
            rc = sbmt_errf(err, "%s: cannot create %s (%s)", file, obj, h5_why(why));
        } else if (e->numel > 0 &&
                   H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf + e->offset) < 0) {
            rc = sbmt_errf(err, "%s: cannot write %s (%s)", file, obj, h5_why(why));
        }
        close_id(&ds, H5Dclose);
        close_id(&dcpl, H5Pclose);
        close_id(&space, H5Sclose);
    }
    H5Pclose(lcpl);
    return rc;
}

// fsync of the directory holding a path, so that a rename in it is durable.
static int fsync_dir_of(const char *path, char *dir_out, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir_out, len, ".");
    else if (slash == path)
        snprintf(dir_out, len, "/");
    else
        snprintf(dir_out, len, "%.*s", (int)(slash - path), path);
    int fd = open(dir_out, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    // Some file systems cannot fsync a directory; the rename is then as durable as it gets.
    if (rc != 0 && (errno == EINVAL || errno == ENOTSUP)) rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

// Bob Jenkins' lookup3 hashlittle() (public domain), the checksum of HDF5's metadata.
#define ROT32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static uint32_t lookup3(const unsigned char *k, size_t length) {
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)length;
    while (length > 12) {
        a += k[0] + ((uint32_t)k[1] << 8) + ((uint32_t)k[2] << 16) + ((uint32_t)k[3] << 24);
        b += k[4] + ((uint32_t)k[5] << 8) + ((uint32_t)k[6] << 16) + ((uint32_t)k[7] << 24);
        c += k[8] + ((uint32_t)k[9] << 8) + ((uint32_t)k[10] << 16) + ((uint32_t)k[11] << 24);
        a -= c; a ^= ROT32(c, 4);  c += b;
        b -= a; b ^= ROT32(a, 6);  a += c;
        c -= b; c ^= ROT32(b, 8);  b += a;
        a -= c; a ^= ROT32(c, 16); c += b;
        b -= a; b ^= ROT32(a, 19); a += c;
        c -= b; c ^= ROT32(b, 4);  b += a;
        length -= 12;
        k += 12;
    }
    switch (length) {
    case 12: c += (uint32_t)k[11] << 24; /* fall through */
    case 11: c += (uint32_t)k[10] << 16; /* fall through */
    case 10: c += (uint32_t)k[9] << 8;   /* fall through */
    case 9:  c += k[8];                  /* fall through */
    case 8:  b += (uint32_t)k[7] << 24;  /* fall through */
    case 7:  b += (uint32_t)k[6] << 16;  /* fall through */
    case 6:  b += (uint32_t)k[5] << 8;   /* fall through */
    case 5:  b += k[4];                  /* fall through */
    case 4:  a += (uint32_t)k[3] << 24;  /* fall through */
    case 3:  a += (uint32_t)k[2] << 16;  /* fall through */
    case 2:  a += (uint32_t)k[1] << 8;   /* fall through */
    case 1:  a += k[0]; break;
    default: return c;
    }
    c ^= b; c -= ROT32(b, 14);
    a ^= c; a -= ROT32(c, 11);
    b ^= a; b -= ROT32(a, 25);
    c ^= b; c -= ROT32(b, 16);
    a ^= c; a -= ROT32(c, 4);
    b ^= a; b -= ROT32(a, 14);
    c ^= b; c -= ROT32(b, 24);
    return c;
}

// H5Fget_file_image (HDF5 1.10) clears the superblock's status flags in the copy it returns but
// leaves the checksum of a version 2/3 superblock as computed with the flags set, so the image
// would not open. Recompute it. Returns -1 if the image does not start with such a superblock.
static int fix_superblock(unsigned char *img, size_t len) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (len < 12 || memcmp(img, sig, 8) != 0) return -1;
    if (img[8] < 2) return 0;  // versions 0 and 1 carry no checksum
    size_t at = 12 + 4 * (size_t)img[9];  // base, extension, EOF and root addresses
    if (img[8] > 3 || at + 4 > len) return -1;
    uint32_t c = lookup3(img, at);
    for (int i = 0; i < 4; i++) img[at + i] = (unsigned char)(c >> (8 * i));
    return 0;
}

// Builds the whole checkpoint in memory (HDF5 core driver without a backing file) and returns a
// malloc'd copy of its file image. HDF5 then never touches the disk while saving: in 1.10 a
// failed write (disk full) can crash it, or leave a file id it cannot close that crashes the
// process at exit; here the only disk I/O is our own write of the finished image.
static int build_image(const char *path, const param_table *t, const float *params,
                       const float *adam_m, const float *adam_v, int64_t step, uint64_t seed,
                       const char *config_text, unsigned char **image, size_t *image_len,
                       char *err) {
    char why[WHY_LEN];
    *image = NULL;
    *image_len = 0;
    // Growing the in-memory file is a realloc (cheap for large blocks), so a modest increment.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0 ||
        H5Pset_fapl_core(fapl, (size_t)4 << 20, 0) < 0) {
        sbmt_errf(err, "%s: HDF5 file access property failure (%s)", path, h5_why(why));
        close_id(&fapl, H5Pclose);
        return -1;
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) sbmt_errf(err, "%s: cannot create the HDF5 file in memory (%s)", path, h5_why(why));
    close_id(&fapl, H5Pclose);
    if (f < 0) return -1;

    int32_t version = CKPT_VERSION;
    int rc = 0;
    if (write_str_attr(f, "sbmt_format", CKPT_FORMAT) < 0 ||
        write_num_attr(f, "sbmt_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version) < 0 ||
        write_num_attr(f, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &step) < 0 ||
        write_num_attr(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &seed) < 0 ||
        write_str_attr(f, "config", config_text ? config_text : "") < 0)
        rc = sbmt_errf(err, "%s: cannot write root attributes (%s)", path, h5_why(why));
    if (rc == 0) rc = write_tree(f, "/model", t, params, path, err);
    if (rc == 0 && adam_m) rc = write_tree(f, "/optim/adam_m", t, adam_m, path, err);
    if (rc == 0 && adam_v) rc = write_tree(f, "/optim/adam_v", t, adam_v, path, err);
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
        rc = sbmt_errf(err, "%s: cannot flush the in-memory HDF5 file (%s)", path, h5_why(why));
    ssize_t n = rc == 0 ? H5Fget_file_image(f, NULL, 0) : -1;
    if (rc == 0 && n <= 0)
        rc = sbmt_errf(err, "%s: cannot get the HDF5 file image (%s)", path, h5_why(why));
    if (rc == 0) {
        *image = malloc((size_t)n);
        if (!*image)
            rc = sbmt_errf(err, "%s: out of memory for the %zd-byte checkpoint image", path, n);
        else if (H5Fget_file_image(f, *image, (size_t)n) != n)
            rc = sbmt_errf(err, "%s: cannot get the HDF5 file image (%s)", path, h5_why(why));
        else if (fix_superblock(*image, (size_t)n) != 0)
            rc = sbmt_errf(err, "%s: unexpected HDF5 superblock in the file image", path);
    }
    if (H5Fclose(f) < 0 && rc == 0)
        rc = sbmt_errf(err, "%s: cannot close the in-memory HDF5 file (%s)", path, h5_why(why));
    if (rc != 0) {
        free(*image);
        *image = NULL;
        return -1;
    }
    *image_len = (size_t)n;
    return 0;
}

static int write_all(int fd, const unsigned char *buf, size_t n) {
    while (n > 0) {
        size_t piece = n < ((size_t)1 << 26) ? n : ((size_t)1 << 26);
        ssize_t w = write(fd, buf, piece);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int ckpt_save(const char *path, const param_table *t, const float *params, const float *adam_m,
              const float *adam_v, int64_t step, uint64_t seed, const char *config_text, char *err) {
    h5_quiet();
    if ((adam_m == NULL) != (adam_v == NULL))
        return sbmt_errf(err, "%s: cannot save only one of the two Adam moments", path);
    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    // Create the temporary file first, so an unwritable location fails before any work. From
    // here on every failure removes it.
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        sbmt_errf(err, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    unsigned char *image = NULL;
    size_t len = 0;
    int rc = build_image(path, t, params, adam_m, adam_v, step, seed, config_text, &image, &len, err);
    if (rc == 0 && write_all(fd, image, len) != 0)
        rc = sbmt_errf(err, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    free(image);
    if (rc == 0 && fsync(fd) != 0)
        rc = sbmt_errf(err, "%s: cannot sync %s to disk: %s", path, tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = sbmt_errf(err, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    if (rc == 0) {  // cheap sanity check (superblock and root attributes) before replacing path
        hid_t f = open_checked(tmp, err);
        if (f < 0)
            rc = -1;
        else
            H5Fclose(f);
    }
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sbmt_errf(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);

    // Make the rename itself durable.
    char *dir = xmalloc(plen + 2);
    if (fsync_dir_of(path, dir, plen + 2) != 0)
        rc = sbmt_errf(err, "%s: checkpoint written but cannot sync directory %s: %s", path, dir,
                       strerror(errno));
    free(dir);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Reading

int ckpt_read_meta(const char *path, int64_t *step, uint64_t *seed, char **config_text, char *err) {
    if (config_text) *config_text = NULL;
    hid_t f = open_checked(path, err);
    if (f < 0) return -1;
    int64_t s = 0;
    uint64_t sd = 0;
    char *cfg = NULL;
    int rc = read_int_attr(f, path, "step", H5T_NATIVE_INT64, &s, err);
    if (rc == 0) rc = read_int_attr(f, path, "seed", H5T_NATIVE_UINT64, &sd, err);
    if (rc == 0) rc = read_str_attr(f, path, "config", &cfg, err);
    H5Fclose(f);
    if (rc != 0) return -1;
    if (step) *step = s;
    if (seed) *seed = sd;
    if (config_text)
        *config_text = cfg;
    else
        free(cfg);
    return 0;
}

// Whether the object at an absolute path exists, checking each component so that a missing
// intermediate group (or a dataset where a group is expected) reads as "no".
static int obj_exists(hid_t f, const char *obj) {
    char buf[OBJ_LEN];
    snprintf(buf, sizeof buf, "%s", obj);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(f, buf, H5P_DEFAULT) <= 0) return 0;
            if (c == '\0') break;
            *p = c;
        }
    }
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);  // also rejects dangling soft links
    if (o < 0) return 0;
    H5Oclose(o);
    return 1;
}

typedef struct {
    const param_table *t;
    char extra[OBJ_LEN];
} extra_ctx;

static herr_t extra_visit(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    extra_ctx *c = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    H5I_type_t type = o >= 0 ? H5Iget_type(o) : H5I_BADID;
    if (o >= 0) H5Oclose(o);
    if (type == H5I_GROUP) return 0;
    if (type == H5I_DATASET && param_table_find(c->t, name) >= 0) return 0;
    snprintf(c->extra, sizeof c->extra, "%s", name);
    return 1;  // stop: one name is enough for the message
}

// Checks every tensor of `t` under root (exists, float, expected shape) and that root holds no
// others; with dst non-NULL, then reads them into dst.
// A tensor holding NaN or Inf would train (or evaluate) to garbage: refused at load, naming
// the tensor and its first non-finite element by index.
static int check_finite(const char *file, const char *obj, const param_entry *e, const float *x,
                        char *err) {
    for (size_t i = 0; i < e->numel; i++) {
        if (isfinite(x[i])) continue;
        char idx[128] = "";
        size_t rest = i, stride = e->numel;
        for (int d = 0; d < e->ndim; d++) {
            stride /= (size_t)e->shape[d];
            size_t len = strlen(idx);
            snprintf(idx + len, sizeof idx - len, "%s%zu", d ? ", " : "", rest / stride);
            rest %= stride;
        }
        return sbmt_errf(err, "%s: %s: element [%s] is %s; the checkpoint holds a non-finite "
                              "value (a diverged run?)",
                         file, obj, idx, isnan(x[i]) ? "NaN" : x[i] > 0 ? "+Inf" : "-Inf");
    }
    return 0;
}

static int load_tree(hid_t f, const char *file, const char *root, const param_table *t,
                     float *dst, char *err) {
    char why[WHY_LEN], obj[OBJ_LEN], want[128], have[128];
    for (int i = 0; i < t->n; i++) {
        const param_entry *e = &t->e[i];
        snprintf(obj, sizeof obj, "%s/%s", root, e->name);
        if (!obj_exists(f, obj))
            return sbmt_errf(err, "%s: %s: missing (checkpoint of a different configuration?)", file,
                             obj);
        hid_t ds = H5Dopen2(f, obj, H5P_DEFAULT);
        if (ds < 0) return sbmt_errf(err, "%s: %s: not a dataset", file, obj);
        hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
        int rc = 0;
        if (type < 0 || H5Tget_class(type) != H5T_FLOAT) {
            rc = sbmt_errf(err, "%s: %s: not a floating-point dataset", file, obj);
        } else if (space < 0 || H5Sget_simple_extent_type(space) != H5S_SIMPLE) {
            rc = sbmt_errf(err, "%s: %s: not a simple (array) dataset", file, obj);
        } else {
            hsize_t dims[H5S_MAX_RANK], exp[PARAM_MAX_DIM];
            int nd = H5Sget_simple_extent_dims(space, dims, NULL);
            int same = nd == e->ndim;
            for (int d = 0; d < e->ndim; d++) {
                exp[d] = (hsize_t)e->shape[d];
                if (same && dims[d] != exp[d]) same = 0;
            }
            if (!same) {
                fmt_shape(have, sizeof have, nd < 0 ? 0 : nd, dims);
                fmt_shape(want, sizeof want, e->ndim, exp);
                rc = sbmt_errf(err, "%s: %s: shape %s but the model expects %s", file, obj, have,
                               want);
            } else if (dst && e->numel > 0 && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                               dst + e->offset) < 0) {
                rc = sbmt_errf(err, "%s: %s: read failed, the file is corrupted (%s)", file, obj,
                               h5_why(why));
            } else if (dst) {
                rc = check_finite(file, obj, e, dst + e->offset, err);
            }
        }
        close_id(&space, H5Sclose);
        close_id(&type, H5Tclose);
        H5Dclose(ds);
        if (rc) return rc;
    }
    // Every tensor the model needs is there; reject any the model does not know.
    hid_t g = H5Gopen2(f, root, H5P_DEFAULT);
    if (g < 0) return sbmt_errf(err, "%s: %s: not a group", file, root);
    extra_ctx c;
    c.t = t;
    c.extra[0] = '\0';
    int rc = 0;
    if (H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, extra_visit, &c) < 0 && !c.extra[0])
        rc = sbmt_errf(err, "%s: %s: cannot list (%s)", file, root, h5_why(why));
    H5Gclose(g);
    if (c.extra[0])
        rc = sbmt_errf(err,
                       "%s: %s/%s: not a tensor of this model (checkpoint of a different "
                       "configuration?)",
                       file, root, c.extra);
    return rc;
}

int ckpt_load(const char *path, const param_table *t, float *params, float *adam_m, float *adam_v,
              char *err) {
    hid_t f = open_checked(path, err);
    if (f < 0) return -1;
    const char *roots[3] = {"/model", "/optim/adam_m", "/optim/adam_v"};
    float *dst[3] = {params, adam_m, adam_v};
    int rc = 0;
    // First check everything, so that a mismatch leaves the caller's buffers untouched; then read
    // (only a read error, i.e. a corrupted file, can leave them partly overwritten).
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (int k = 0; k < 3 && rc == 0; k++) {
            if (!dst[k]) continue;
            if (k > 0 && !obj_exists(f, roots[k]))
                rc = sbmt_errf(err, "%s: %s: missing (checkpoint saved without optimizer state)",
                               path, roots[k]);
            else
                rc = load_tree(f, path, roots[k], t, pass ? dst[k] : NULL, err);
        }
    }
    H5Fclose(f);
    return rc;
}
