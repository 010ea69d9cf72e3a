/* Checkpoints: a run interrupted after epoch 2 and resumed from DIR/last.safetensors ends with
 * bit-identical weights to an uninterrupted run (plain training with dropout, augmentation,
 * mixup, a plateau schedule and early stopping; adversarial FGSM-RS with its guard, robust
 * validation, Adam and one-cycle), and one stopped mid-epoch (*stop, as on SIGTERM) resumed from
 * there, also from a checkpoint of the format before --on-nonfinite skip; best.safetensors follows the best epoch; mismatched resumes
 * fail with a message; and a process killed with SIGKILL in the middle of saving leaves the
 * previous file intact. */
#define _DEFAULT_SOURCE /* mkdtemp, kill */
#include "advtrain.h"
#include "testutil.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static at_data data;
static at_dataset val;
static char root[256];

static const char *SPEC = "conv:8:4:2:1,relu,conv:16:4:2:1,relu,flatten,dropout:0.2,linear:10";

static at_net *fresh_net(uint64_t seed) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, SPEC, 1, 28, 28));
    at_net_init(net, seed);
    return net;
}

static void make_dir(char *path, size_t cap, const char *name) {
    snprintf(path, cap, "%s/%s", root, name);
    mkdir(path, 0700);
}

typedef struct stopper {
    int stop_after; /* 0: never */
} stopper;

static bool on_epoch(void *user, const at_epoch_stats *st) {
    const stopper *s = user;
    return s->stop_after == 0 || st->epoch < s->stop_after;
}

/* Trains `epochs` with checkpoints in dir; stop_after > 0 interrupts after that epoch. */
static at_status run(at_net *net, at_train_config cfg, const char *dir, bool resume, int stop_after) {
    cfg.checkpoint.dir = dir;
    cfg.checkpoint.resume = resume;
    stopper s = {stop_after};
    at_train_callbacks cb = {&s, NULL, on_epoch};
    return at_train(net, &data.train, &val, &data.test, &cfg, &cb);
}

static bool same_params(at_net *a, at_net *b) {
    return memcmp(at_net_params(a), at_net_params(b), sizeof(float) * at_net_num_params(a)) == 0;
}

static void check_resume_equivalence(const char *name, at_train_config cfg) {
    char whole[320], parts[340];
    make_dir(whole, sizeof whole, name);
    snprintf(parts, sizeof parts, "%s-resumed", whole);
    mkdir(parts, 0700);

    at_net *ref = fresh_net(11);
    CHECK_OK(run(ref, cfg, whole, false, 0));

    at_net *first = fresh_net(11);
    CHECK_OK(run(first, cfg, parts, false, 2));
    int epoch = -1;
    CHECK_OK(at_checkpoint_epoch(parts, &epoch));
    CHECK_MSG(epoch == 2, "%s: checkpoint after the interruption holds epoch %d", name, epoch);
    at_net_free(first);

    /* A different initialization: everything must come from the checkpoint. */
    at_net *resumed = fresh_net(99);
    CHECK_OK(run(resumed, cfg, parts, true, 0));
    CHECK_MSG(same_params(ref, resumed), "%s: resumed weights differ from the uninterrupted run", name);
    CHECK_OK(at_checkpoint_epoch(parts, &epoch));
    CHECK(epoch == cfg.epochs);

    /* Both files are model files; best.safetensors says which epoch it holds. */
    char path[400];
    snprintf(path, sizeof path, "%s/last.safetensors", parts);
    at_net *loaded = NULL;
    at_st_file *meta = NULL;
    CHECK_OK(at_model_load(&loaded, path, &meta));
    at_st_free(meta);
    at_net_free(loaded);
    snprintf(path, sizeof path, "%s/best.safetensors", parts);
    meta = NULL;
    CHECK_OK(at_model_load(&loaded, path, &meta));
    const char *best = meta ? at_st_meta_get(meta, "advtrain.best_epoch") : NULL;
    CHECK_MSG(best && atoi(best) >= 1 && atoi(best) <= cfg.epochs, "%s: best epoch '%s'", name,
              best ? best : "(none)");
    at_st_free(meta);
    at_net_free(loaded);
    at_net_free(ref);
    at_net_free(resumed);
}

static at_train_config plain_config(void) {
    at_train_config c = at_train_defaults();
    c.epochs = 4;
    c.batch = 64;
    c.optim.lr = 0.05f;
    c.optim.momentum = 0.9f;
    c.optim.nesterov = true;
    c.augment.flip = true;
    c.augment.crop_pad = 2;
    c.mixup_alpha = 0.4f;
    c.schedule = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    c.schedule.patience = 0;
    c.early_stop = 10;
    c.l1 = 1e-5f;
    return c;
}

static at_train_config adversarial_config(void) {
    at_train_config c = at_train_defaults();
    c.epochs = 4;
    c.batch = 64;
    c.optim = at_optim_defaults(AT_OPTIM_ADAM);
    c.schedule = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    c.adv = at_adv_train_defaults(AT_ADV_FGSM_RS, 0.1f);
    c.adv.warmup_epochs = 1;
    c.adv.robust_val_steps = 3;
    c.adv.robust_val_samples = 100;
    c.adv.guard_samples = 100;
    return c;
}

/* Stops mid-epoch: sets *stop after a chosen batch; records each epoch's statistics. */
typedef struct mid_stopper {
    volatile sig_atomic_t flag;
    int epoch, batch; /* 1-based; 0: never */
    at_epoch_stats stats[8]; /* by epoch - 1 */
} mid_stopper;

static void stop_at_batch(void *user, int epoch, int batch, int nbatches, float loss, float metric) {
    (void)nbatches, (void)loss, (void)metric;
    mid_stopper *m = user;
    if (epoch == m->epoch && batch == m->batch) m->flag = 1;
}

static bool record_epoch(void *user, const at_epoch_stats *st) {
    if (st->epoch >= 1 && st->epoch <= 8) ((mid_stopper *)user)->stats[st->epoch - 1] = *st;
    return true;
}

static at_status run_mid(at_net *net, at_train_config cfg, const char *dir, bool resume, mid_stopper *m) {
    cfg.checkpoint.dir = dir;
    cfg.checkpoint.resume = resume;
    at_train_callbacks cb = {m, stop_at_batch, record_epoch, &m->flag};
    return at_train(net, &data.train, &val, &data.test, &cfg, &cb);
}

/* Makes dir/last.safetensors look written by a version before --on-nonfinite skip: its state
 * keys epoch_skipped, epoch_samples, lr_scale and skipped_in_row renamed in place (same length,
 * so the header and the tensors' offsets stay valid), which the reader ignores as unknown. */
static void make_older_checkpoint(const char *dir) {
    char path[400];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (!f) return;
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    const char *keys[] = {"epoch_skipped", "epoch_samples", "lr_scale", "skipped_in_row"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const size_t len = strlen(keys[k]);
        bool found = false;
        for (size_t i = 0; i + len <= n; i++)
            if (memcmp(buf + i, keys[k], len) == 0) {
                buf[i] = 'X';
                found = true;
            }
        CHECK_MSG(found, "%s: no key %s", path, keys[k]);
    }
    rewind(f);
    CHECK(fwrite(buf, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* A stop request mid-epoch writes a checkpoint there; resuming from it ends with the weights and
 * the last epoch's statistics of the uninterrupted run, bit for bit, also from a checkpoint of
 * the format before --on-nonfinite skip. */
static void check_mid_epoch_resume(const char *name, at_train_config cfg, bool older) {
    char whole[320], parts[340];
    make_dir(whole, sizeof whole, name);
    snprintf(parts, sizeof parts, "%s-resumed", whole);
    mkdir(parts, 0700);
    mid_stopper never = {0, 0, 0, {{0}}}, at = {0, 2, 5, {{0}}}, after = {0, 0, 0, {{0}}};
    at_net *ref = fresh_net(11), *first = fresh_net(11), *resumed = fresh_net(99);
    CHECK_OK(run_mid(ref, cfg, whole, false, &never));
    CHECK(run_mid(first, cfg, parts, false, &at) == AT_ERR_INTERRUPTED);
    int epoch = -1, batches = -1;
    CHECK_OK(at_checkpoint_progress(parts, &epoch, &batches));
    CHECK_MSG(epoch == 1 && batches == 5, "%s: checkpoint holds epoch %d, batch %d", name, epoch, batches);
    if (older) make_older_checkpoint(parts);
    CHECK_OK(run_mid(resumed, cfg, parts, true, &after));
    CHECK_MSG(same_params(ref, resumed), "%s: weights resumed mid-epoch differ from the uninterrupted run", name);
    for (int e = 2; e <= cfg.epochs; e++) { /* the interrupted epoch's sums came from the checkpoint */
        const at_epoch_stats *a = &after.stats[e - 1], *b = &never.stats[e - 1];
        CHECK_MSG(a->epoch == e && a->train_loss == b->train_loss && a->train_metric == b->train_metric &&
                      a->test_metric == b->test_metric,
                  "%s: epoch %d: loss %.9g vs %.9g, metric %.9g vs %.9g", name, e, (double)a->train_loss,
                  (double)b->train_loss, (double)a->train_metric, (double)b->train_metric);
    }
    at_net_free(ref);
    at_net_free(first);
    at_net_free(resumed);
}

static void check_bad_resumes(void) {
    char dir[320];
    make_dir(dir, sizeof dir, "plain-resumed");
    at_train_config cfg = plain_config();
    cfg.batch = 32;
    at_net *net = fresh_net(1);
    at_status s = run(net, cfg, dir, true, 0);
    CHECK_MSG(s == AT_ERR_ARG && strstr(at_error_message(), "batch"), "%s", at_error_message());
    cfg = adversarial_config();
    s = run(net, cfg, dir, true, 0);
    CHECK_MSG(s == AT_ERR_ARG, "a plain checkpoint resumed with adversarial training: %s", at_error_message());
    char empty[320];
    make_dir(empty, sizeof empty, "empty");
    s = run(net, plain_config(), empty, true, 0);
    CHECK_MSG(s == AT_ERR_IO && strstr(at_error_message(), "last.safetensors"), "%s", at_error_message());
    at_net_free(net);
}

/* A child saves two distinct models to one path over and over; SIGKILL lands at a random
 * moment, often mid-write. The file must then load and hold one of the two models whole. */
static void check_kill_during_save(void) {
    at_net *a = NULL, *b = NULL;
    CHECK_OK(at_net_from_spec(&a, "flatten,linear:1000,relu,linear:10", 1, 28, 28));
    CHECK_OK(at_net_from_spec(&b, "flatten,linear:1000,relu,linear:10", 1, 28, 28));
    at_net_init(a, 1);
    at_net_init(b, 2);
    char path[320];
    snprintf(path, sizeof path, "%s/killed.safetensors", root);
    CHECK_OK(at_model_save(a, path, NULL, 0));
    srand(12345);
    int interrupted = 0;
    for (int round = 0; round < 12; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (unsigned i = 0;; i++) at_model_save(i % 2 ? a : b, path, NULL, 0);
        }
        struct timespec ts = {0, 1000000L + (rand() % 30) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        interrupted += WIFSIGNALED(status);
        at_net *loaded = NULL;
        at_status s = at_model_load(&loaded, path, NULL);
        CHECK_MSG(s == AT_OK, "round %d: %s", round, at_error_message());
        if (s == AT_OK) CHECK_MSG(same_params(loaded, a) || same_params(loaded, b), "round %d: mixed file", round);
        at_net_free(loaded);
    }
    CHECK(interrupted == 12);
    at_net_free(a);
    at_net_free(b);
}

int main(void) {
    at_set_threads(2);
    at_status s = at_data_load(&data, "fashion-mnist");
    if (s != AT_OK) {
        fprintf(stderr, "skipping: %s\n", at_error_message());
        return 77;
    }
    CHECK_OK(at_dataset_truncate(&data.train, 1200));
    CHECK_OK(at_dataset_truncate(&data.test, 200));
    CHECK_OK(at_dataset_split(&data.train, &val, 0.2f, 5));
    snprintf(root, sizeof root, "/tmp/advtrain-ckpt-XXXXXX");
    if (!mkdtemp(root)) return 1;
    check_resume_equivalence("plain", plain_config());
    check_resume_equivalence("adversarial", adversarial_config());
    check_mid_epoch_resume("plain-mid", plain_config(), false);
    check_mid_epoch_resume("adversarial-mid", adversarial_config(), false);
    check_mid_epoch_resume("plain-mid-older", plain_config(), true);
    /* QAT: the moving activation ranges go through the checkpoint too */
    at_train_config qat = adversarial_config();
    qat.qat.enabled = true;
    check_resume_equivalence("adversarial-qat", qat);
    check_mid_epoch_resume("adversarial-qat-mid", qat, false);
    check_bad_resumes();
    check_kill_during_save();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (tu_failures == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    at_dataset_free(&val);
    at_data_free(&data);
    printf("%d checks, %d failures\n", tu_checks, tu_failures);
    return tu_failures != 0;
}
