/* Data sources: what a --data string names and how it is loaded, in one table. A source is
 * PREFIX or PREFIX:ARG; the loaders it calls (idx.c, cifar10.c, synthetic.c) read files or
 * make data and know nothing of these strings. */
#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define FASHION_MNIST_HINT "install it with: sudo apt-get install dataset-fashion-mnist"
#define IDX_HINT                                                                            \
    "expected train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and " \
    "t10k-labels-idx1-ubyte (each optionally .gz)"
#define CIFAR_HINT                                                                   \
    "expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin from "         \
    "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
/* "synthetic" without a seed uses this one. */
#define SYNTHETIC_DEFAULT_SEED 0

typedef struct data_source data_source;
struct data_source {
    const char *prefix;
    const char *arg;  /* what follows "PREFIX:" ("DIR", "SEED"); NULL: PREFIX alone */
    /* Fills data; arg is NULL for PREFIX alone, source the whole string (for messages). */
    at_status (*load)(at_data *data, const data_source *src, const char *source, const char *arg);
};

/* Appends a hint to the current error message, keeping the status. */
static at_status with_hint(at_status s, const char *hint) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", at_error_message());
    return at_fail(s, "%s; %s", msg, hint);
}

/* DIR/base.gz if it can be opened, else DIR/base; AT_ERR_IO naming both when neither can. */
static at_status find_idx_file(char *out, size_t cap, const char *dir, const char *base) {
    char gz[4096];
    int w = snprintf(gz, sizeof gz, "%s.gz", base);
    at_status s = (w < 0 || (size_t)w >= sizeof gz) ? at_fail(AT_ERR_ARG, "name too long: %s", base)
                                                   : at_path_join(out, cap, dir, gz);
    if (s != AT_OK) return s;
    FILE *f = fopen(out, "rb");
    if (f) {
        fclose(f);
        return AT_OK;
    }
    int gz_err = errno;
    if ((s = at_path_join(out, cap, dir, base)) != AT_OK) return s;
    if ((f = fopen(out, "rb"))) {
        fclose(f);
        return AT_OK;
    }
    /* Report the plain name's error unless it is merely absent while the .gz exists. */
    int err = errno == ENOENT ? gz_err : errno;
    return at_fail(AT_ERR_IO, "cannot open %s(.gz): %s", out, strerror(err));
}

static at_status load_idx_split(at_dataset *ds, const char *dir, const char *images,
                                const char *labels) {
    char ipath[4096], lpath[4096];
    at_status s = find_idx_file(ipath, sizeof ipath, dir, images);
    if (s == AT_OK) s = find_idx_file(lpath, sizeof lpath, dir, labels);
    if (s == AT_OK) s = at_idx_load(ds, ipath, lpath);
    return s;
}

/* Train and test must describe the same kind of sample; the class count covers both. */
static at_status check_pair(at_data *data, const char *where) {
    at_dataset *a = &data->train, *b = &data->test;
    if (a->c != b->c || a->h != b->h || a->w != b->w || a->target_dim != b->target_dim)
        return at_fail(AT_ERR_SHAPE, "%s: training samples are %dx%dx%d but test samples are %dx%dx%d",
                       where, a->c, a->h, a->w, b->c, b->h, b->w);
    int k = AT_MAX(a->num_classes, b->num_classes);
    a->num_classes = b->num_classes = k;
    return AT_OK;
}

/* One split of a directory's dataset (train or test). */
typedef at_status (*split_loader)(at_dataset *ds, const char *dir, bool train);

static at_status idx_split(at_dataset *ds, const char *dir, bool train) {
    return train ? load_idx_split(ds, dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
                 : load_idx_split(ds, dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

/* Both splits from dir, named name; an I/O error's message ends with hint (what dir should
 * hold). */
static at_status load_pair(at_data *data, split_loader load, const char *dir, const char *name,
                           const char *hint) {
    at_status s = load(&data->train, dir, true);
    if (s == AT_OK) s = load(&data->test, dir, false);
    if (s == AT_ERR_IO) s = with_hint(s, hint);
    if (s == AT_OK) s = check_pair(data, dir);
    if (s == AT_OK) snprintf(data->name, sizeof data->name, "%s", name);
    return s;
}

static at_status no_dir(const char *source) {
    return at_fail(AT_ERR_ARG, "data source '%s' needs a directory after ':'", source);
}

/* "fashion-mnist": Debian's dataset-fashion-mnist package. */
static at_status load_fashion_mnist(at_data *data, const data_source *src, const char *source,
                                    const char *arg) {
    return load_pair(data, idx_split, FASHION_MNIST_DIR, src->prefix, FASHION_MNIST_HINT);
}

/* "fashion-mnist:DIR", "mnist:DIR", "idx:DIR": the four IDX files in DIR. */
static at_status load_idx(at_data *data, const data_source *src, const char *source, const char *arg) {
    return *arg ? load_pair(data, idx_split, arg, src->prefix, IDX_HINT) : no_dir(source);
}

/* "cifar10:DIR": the binary batches in DIR. */
static at_status load_cifar10(at_data *data, const data_source *src, const char *source, const char *arg) {
    return *arg ? load_pair(data, at_cifar10_load, arg, src->prefix, CIFAR_HINT) : no_dir(source);
}

/* "synthetic" or "synthetic:SEED" (SEED a decimal or 0x-hex unsigned integer). */
static at_status load_synthetic(at_data *data, const data_source *src, const char *source,
                                const char *arg) {
    uint64_t seed = SYNTHETIC_DEFAULT_SEED;
    if (arg) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 0);
        if (!*arg || *end || errno || *arg == '-' || *arg == '+' || *arg == ' ')
            return at_fail(AT_ERR_ARG, "data source '%s': SEED must be an unsigned integer", source);
        seed = v;
    }
    return at_synthetic_load(data, seed);
}

/* Every source, in the order the valid forms are listed. */
static const data_source SOURCES[] = {
    {"fashion-mnist", NULL, load_fashion_mnist},
    {"fashion-mnist", "DIR", load_idx},
    {"mnist", "DIR", load_idx},
    {"idx", "DIR", load_idx},
    {"cifar10", "DIR", load_cifar10},
    {"synthetic", NULL, load_synthetic},
    {"synthetic", "SEED", load_synthetic},
};
enum { NSOURCES = sizeof SOURCES / sizeof *SOURCES };

/* Whether source has src's form; *arg: what follows "PREFIX:" (NULL for PREFIX alone). */
static bool matches(const data_source *src, const char *source, const char **arg) {
    size_t n = strlen(src->prefix);
    *arg = NULL;
    if (!src->arg) return strcmp(source, src->prefix) == 0;
    if (strncmp(source, src->prefix, n) != 0 || source[n] != ':') return false;
    *arg = source + n + 1;
    return true;
}

/* "fashion-mnist, fashion-mnist:DIR, ...": the forms of SOURCES, for messages. */
static const char *valid_forms(char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < NSOURCES && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s%s%s", i ? ", " : "", SOURCES[i].prefix,
                                SOURCES[i].arg ? ":" : "", SOURCES[i].arg ? SOURCES[i].arg : "");
    return buf;
}

at_status at_data_load(at_data *data, const char *source) {
    if (!data) return at_fail(AT_ERR_ARG, "at_data_load: data is NULL");
    memset(data, 0, sizeof *data);
    char forms[256];
    if (!source) return at_fail(AT_ERR_ARG, "no data source; valid forms: %s", valid_forms(forms, sizeof forms));
    for (int i = 0; i < NSOURCES; i++) {
        const char *arg;
        if (!matches(&SOURCES[i], source, &arg)) continue;
        at_status s = SOURCES[i].load(data, &SOURCES[i], source, arg);
        if (s != AT_OK) at_data_free(data);
        return s;
    }
    return at_fail(AT_ERR_ARG, "unknown data source '%s'; valid forms: %s", source, valid_forms(forms, sizeof forms));
}
