/* Helpers shared by the fuzz targets and the seed generator (see fuzz_common.h). */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "fuzz_common.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char scratch[512];
static void cleanup(void);

void fuzz_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    cleanup(); /* abort() skips atexit; a sanitizer's report cannot be hooked without hiding the
                  input from libFuzzer (scripts/fuzz.sh removes what is left then) */
    abort();
}

/* Removes every file in the scratch directory, then the directory (it holds no subdirectory
 * deeper than one level: the checkpoint and CIFAR-10 targets make one each). */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(path);
        else unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void cleanup(void) {
    if (scratch[0]) remove_tree(scratch);
}

const char *fuzz_dir(void) {
    if (scratch[0]) return scratch;
    const char *base = getenv("ADVTRAIN_FUZZ_TMP");
    struct stat st;
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/advtrain-fuzz-%ld-XXXXXX", base, (long)getpid());
    if (!mkdtemp(scratch)) fuzz_fail("cannot create a scratch directory under", base);
    atexit(cleanup);
    /* One thread: each input is tiny, and runs stay deterministic. */
    at_set_threads(1);
    return scratch;
}

void fuzz_path(char *buf, size_t cap, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", fuzz_dir(), name);
    if (n < 0 || (size_t)n >= cap) fuzz_fail("path too long", name);
}

void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) fuzz_fail("cannot write", path);
}

void fuzz_write_gz(const char *path, const void *data, size_t n) {
    gzFile f = gzopen(path, "wb");
    if (!f) fuzz_fail("cannot write", path);
    /* gzwrite takes an unsigned count; fuzz inputs are far below 4 GB. */
    if (n && gzwrite(f, data, (unsigned)n) != (int)n) fuzz_fail("gzwrite failed on", path);
    if (gzclose(f) != Z_OK) fuzz_fail("gzclose failed on", path);
}

void fuzz_remove(const char *path) { unlink(path); }

void fuzz_check_message(at_status s, const char *call) {
    /* ADVTRAIN_FUZZ_VERBOSE=1: what each call said, to read a reproducer's path through the code. */
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("ADVTRAIN_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "fuzz: %s: %s%s%s\n", call, at_status_name(s), s ? ": " : "", s ? at_error_message() : "");
    if (s != AT_OK && !*at_error_message()) fuzz_fail("failure without a message from", call);
}

/* Floats one sample takes in the network's activations and in the largest scratch buffers:
 * the input, every layer output, and the zero-padded input of every convolution (a padding far
 * beyond the kernel is valid, and costs its padded plane). */
int64_t fuzz_sample_floats(const at_net *net) {
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    int64_t total = (int64_t)c * h * w;
    for (int i = 0; i < at_net_num_layers(net); i++) {
        at_net_layer_out_shape(net, i, &c, &h, &w);
        total += (int64_t)c * h * w;
        const at_layer_desc *d = at_net_layer(net, i);
        int src[2];
        if (d->kind != AT_LAYER_CONV2D) continue;
        at_net_layer_inputs(net, i, src);
        if (src[0] < 0) at_net_in_shape(net, &c, &h, &w);
        else at_net_layer_out_shape(net, src[0], &c, &h, &w);
        total += (int64_t)c * (h + 2 * d->pad) * (w + 2 * d->pad);
    }
    return total;
}

void fuzz_predict_small(at_net *net) {
    /* The harness's own bound: a big architecture is valid, but too slow to run per input. */
    if (fuzz_sample_floats(net) > (1 << 20) || at_net_num_params(net) > ((size_t)1 << 22)) return;
    float *x = calloc((size_t)at_net_in_size(net), sizeof *x);
    if (!x) fuzz_fail("out of memory", "input sample");
    const float *logits = NULL;
    at_status s = at_net_predict(net, x, 1, &logits);
    fuzz_check_message(s, "at_net_predict");
    if (s != AT_OK && s != AT_ERR_NOMEM) fuzz_fail("at_net_predict failed", at_error_message());
    volatile float sum = 0;
    for (int i = 0; s == AT_OK && i < at_net_out_size(net); i++) sum += logits[i];
    (void)sum;
    free(x);
}

/* ------------------------------------------------------------ the checkpoint target's run */

enum { TRAIN_N = 12, VAL_N = 4, PIXELS = 4, CLASSES = 4 };

/* n images of 1x2x2 pixels with labels 0..3, the same every run. */
static void make_images(at_dataset *ds, uint8_t *pixels, int32_t *labels, int n, int salt) {
    memset(ds, 0, sizeof *ds);
    for (int i = 0; i < n * PIXELS; i++) pixels[i] = (uint8_t)((i * 37 + salt * 11) % 256);
    for (int i = 0; i < n; i++) labels[i] = (i + salt) % CLASSES;
    ds->n = n;
    ds->c = 1;
    ds->h = ds->w = 2;
    ds->num_classes = CLASSES;
    ds->images = pixels;
    ds->labels = labels;
}

typedef struct stop_after {
    volatile sig_atomic_t stop;
    int batches, seen;
} stop_after;

static void count_batch(void *user, int epoch, int batch, int nbatches, float loss, float metric) {
    stop_after *s = user;
    if (++s->seen >= s->batches) s->stop = 1;
}

static at_train_config train_config(const char *dir, int variant, bool resume) {
    at_train_config cfg = at_train_defaults();
    cfg.epochs = 2;
    cfg.batch = 4;
    cfg.seed = 7;
    cfg.optim.lr = 0.1f;
    cfg.optim.momentum = 0.9f;
    if (variant == 1) {
        cfg.optim = at_optim_defaults(AT_OPTIM_ADAM);
        cfg.optim.lr = 0.01f;
        cfg.schedule = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
        cfg.early_stop = 2;
        cfg.adv = at_adv_train_defaults(AT_ADV_FGSM_RS, 0.1f);
        cfg.adv.robust_val_samples = VAL_N;
        cfg.adv.robust_val_steps = 2;
        cfg.adv.guard_samples = VAL_N;
    }
    cfg.checkpoint.dir = dir;
    cfg.checkpoint.resume = resume;
    return cfg;
}

at_status fuzz_train_run(const char *dir, int variant, bool resume, int stop_after_batches) {
    uint8_t train_px[TRAIN_N * PIXELS], val_px[VAL_N * PIXELS];
    int32_t train_y[TRAIN_N], val_y[VAL_N];
    at_dataset train, val;
    make_images(&train, train_px, train_y, TRAIN_N, 0);
    make_images(&val, val_px, val_y, VAL_N, 1);
    at_net *net;
    at_status s = at_net_from_spec(&net, "linear:4", 1, 2, 2);
    if (s != AT_OK) fuzz_fail("cannot build linear:4", at_error_message());
    at_net_init(net, 1);
    at_train_config cfg = train_config(dir, variant, resume);
    stop_after stop = {0, stop_after_batches, 0};
    at_train_callbacks cb = {.user = &stop, .on_batch = count_batch, .stop = &stop.stop};
    s = at_train(net, &train, variant == 1 ? &val : NULL, NULL, &cfg,
                 stop_after_batches > 0 ? &cb : NULL);
    fuzz_check_message(s, "at_train");
    at_net_free(net);
    return s;
}
